"""A gazetteer of the training data's entity strings, as per-character features.

A network memorises frequent names anyway; a gazetteer adds, for a rare name, "this exact string
was an OG in other sentences, and mostly is when it occurs". Strings are matched anywhere in the
text (Korean particles attach to names: ``서울에서``). No library builds leave-one-out gazetteer
features, hence this module.

Training sentences see the gazetteer *without their own annotation* (leave-one-out counts):
otherwise every training entity would be in the gazetteer, the network would learn to trust the
feature completely, and at test time, where half the names are new, it would miss them.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from ..types import Example

MAX_LEN = 20
"""Longest entity string kept (characters); longer ones are rare and never recur."""
MIN_LEN = 2
"""Shortest entity string kept: single syllables (``수``, ``씨``) match nearly everywhere."""
B, I, E = range(3)  # a match's first, inner and last characters


class Gazetteer:
    """``tagged[(string, label)]``: training sentences where ``string`` is a ``label`` entity;
    ``seen[string]``: training sentences containing ``string`` anywhere. A match of ``string``
    counts as ``label`` when ``tagged / seen >= min_ratio``."""

    def __init__(self, labels: Sequence[str], tagged: dict[tuple[str, str], int], seen: dict[str, int],
                 min_ratio: float) -> None:
        self.labels, self.tagged, self.seen, self.min_ratio = list(labels), tagged, seen, min_ratio
        self._index = {label: i for i, label in enumerate(self.labels)}
        self.by_string: dict[str, list[str]] = {}
        for string, label in tagged:
            self.by_string.setdefault(string, []).append(label)
        self.prefixes = {s[:k] for s in self.by_string for k in range(1, len(s) + 1)}

    @property
    def n_bits(self) -> int:
        return 3 * len(self.labels)

    @classmethod
    def build(cls, train: Sequence[Example], labels: Sequence[str], min_ratio: float) -> "Gazetteer":
        tagged = Counter(key for ex in train for key in _own_entities(ex))
        gaz = cls(labels, dict(tagged), {}, min_ratio)
        gaz.seen = dict(Counter(s for ex in train for s in {m[2] for m in gaz.matches(ex.text)}))
        return gaz

    def matches(self, text: str) -> list[tuple[int, int, str]]:
        """Every ``(start, end, string)`` where a gazetteer string occurs in ``text``."""
        out = []
        for i in range(len(text)):
            for j in range(i + 1, min(len(text), i + MAX_LEN) + 1):
                sub = text[i:j]
                if sub not in self.prefixes:
                    break
                if sub in self.by_string:
                    out.append((i, j, sub))
        return out

    def bits(self, text: str, own: Example | None = None) -> list[int]:
        """Per character of ``text``, a bit mask: bit ``3 * label_index + B/I/E`` is set where a
        string counting as that label starts, continues, ends. ``own``: the training example
        ``text`` belongs to, whose own annotation and occurrences are left out of the counts."""
        mine = _own_entities(own) if own is not None else set()
        out = [0] * len(text)
        for s, e, string in self.matches(text):
            seen = self.seen.get(string, 0) - (own is not None)
            for label in self.by_string[string]:
                tagged = self.tagged[(string, label)] - ((string, label) in mine)
                if tagged < 1 or tagged < self.min_ratio * seen or label not in self._index:
                    continue
                base = 3 * self._index[label]
                out[s] |= 1 << (base + B)
                for k in range(s + 1, e - 1):
                    out[k] |= 1 << (base + I)
                out[e - 1] |= 1 << (base + E)
        return out

    def to_json(self) -> dict:
        strings = sorted(self.by_string)
        return {"labels": self.labels, "min_ratio": self.min_ratio,
                "entries": [[s, self.seen.get(s, 0), {lb: self.tagged[(s, lb)] for lb in self.by_string[s]}]
                            for s in strings]}

    @classmethod
    def from_json(cls, blob: dict) -> "Gazetteer":
        tagged = {(s, lb): n for s, _, per in blob["entries"] for lb, n in per.items()}
        return cls(blob["labels"], tagged, {s: seen for s, seen, _ in blob["entries"]}, blob["min_ratio"])


def _own_entities(ex: Example) -> set[tuple[str, str]]:
    """The distinct ``(string, label)`` entities of one example that the gazetteer keeps."""
    return {(ex.text[sp.start : sp.end], sp.label) for sp in ex.spans if MIN_LEN <= sp.end - sp.start <= MAX_LEN}
