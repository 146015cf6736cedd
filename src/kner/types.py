"""The one data type that flows through kner: a text and its entities as character spans."""
from __future__ import annotations

from dataclasses import dataclass, field

LABELS: tuple[str, ...] = ("PS", "LC", "OG", "DT", "TI", "QT")
"""KLUE NER's six entity types, in the order KLUE documents them."""


@dataclass(frozen=True, order=True)
class Span:
    """A half-open character span ``text[start:end]`` carrying an entity ``label``."""

    start: int
    end: int
    label: str

    def to_dict(self, text: str) -> dict:
        return {"start": self.start, "end": self.end, "label": self.label, "text": text[self.start : self.end]}


@dataclass(frozen=True)
class Example:
    """A sentence with its gold entities; ``id`` is the corpus identifier when there is one."""

    text: str
    spans: tuple[Span, ...] = field(default_factory=tuple)
    id: str = ""

    def __post_init__(self) -> None:
        validate_spans(self.text, self.spans)


def validate_spans(text: str, spans) -> None:
    """Raise ``ValueError`` unless every span indexes ``text`` and spans do not overlap."""
    last_end = 0
    for span in sorted(spans):
        if not (0 <= span.start < span.end <= len(text)):
            raise ValueError(f"span {span} does not fit in a text of {len(text)} characters: {text[:50]!r}")
        if span.start < last_end:
            raise ValueError(f"span {span} overlaps an earlier span in {text[:50]!r}")
        last_end = span.end
