"""Every conversion between characters, subwords, tags and spans, as pure functions.

Spans (see :mod:`kner.types`) are the canonical form. BIO tags and subword labels exist only
inside the models that need them, and they come and go through this module, so that one set
of tested rules decides where an entity starts and ends.
"""
from __future__ import annotations

import re
from collections.abc import Collection, Sequence

from .types import LABELS, Span

OUTSIDE = "O"
_EOJEOL = re.compile(r"\S+")  # an eojeol: a whitespace-delimited word


def bio_labels(types: Sequence[str] = LABELS) -> list[str]:
    """The IOB2 tag inventory: ``O`` first (id 0 means "no entity" in every model), then
    ``B-X, I-X`` for each type."""
    return [OUTSIDE] + [f"{p}-{t}" for t in types for p in ("B", "I")]


# --- characters <-> BIO tags <-> spans ---------------------------------------------------

def spans_to_bio(text: str, spans: Sequence[Span]) -> list[str]:
    """One IOB2 tag per character of ``text``."""
    tags = [OUTSIDE] * len(text)
    for span in spans:
        tags[span.start] = f"B-{span.label}"
        for i in range(span.start + 1, span.end):
            tags[i] = f"I-{span.label}"
    return tags


def bio_to_spans(tags: Sequence[str]) -> list[Span]:
    """Spans from IOB2 tags under KLUE's strict rule: an entity starts only at ``B-X`` and
    continues through ``I-X``; an ``I-X`` that does not continue an ``X`` entity is no entity."""
    spans: list[Span] = []
    start, label = -1, ""
    for i, tag in enumerate(list(tags) + [OUTSIDE]):
        prefix, _, kind = tag.partition("-")
        if label and prefix == "I" and kind == label:
            continue
        if label:
            spans.append(Span(start, i, label))
            label = ""
        if prefix == "B":
            start, label = i, kind
    return spans


def may_follow(prev: str | None, tag: str) -> bool:
    """The IOB2 rule: ``I-X`` comes only right after ``B-X`` or ``I-X``; ``prev`` None is the start."""
    return not tag.startswith("I-") or (prev is not None and prev[2:] == tag[2:])


def is_valid_iob2(tags: Sequence[str]) -> bool:
    """Does every tag of ``tags`` obey :func:`may_follow`?"""
    return all(may_follow(tags[i - 1] if i else None, t) for i, t in enumerate(tags))


def best_valid_iob2(log_probs: Sequence[Sequence[float]], tags: Sequence[str]) -> list[str]:
    """The tag sequence with the highest total log-probability among those that are valid IOB2
    (``I-X`` only right after ``B-X`` or ``I-X``), by Viterbi. ``log_probs`` is (positions, tags).
    Per-position argmax can emit an orphan ``I-X``, which :func:`bio_to_spans` then drops; a
    token classifier has no CRF to forbid it, so decoding does (+0.4 F1 for e5-small on KLUE)."""
    import numpy as np

    scores = np.asarray(log_probs, dtype=np.float64)  # (n, L)
    if not len(scores):
        return []
    allowed = np.array([[may_follow(prev, tag) for tag in tags] for prev in tags])  # (from L, to L)
    trans = np.where(allowed, 0.0, -np.inf)
    starts = np.array([may_follow(None, tag) for tag in tags])
    best = np.where(starts, scores[0], -np.inf)  # (L,) best score of a path ending in each tag
    back = np.zeros(scores.shape, dtype=np.int64)
    for k in range(1, len(scores)):
        cand = best[:, None] + trans  # (from L, to L)
        back[k] = cand.argmax(0)
        best = cand.max(0) + scores[k]
    path = [int(best.argmax())]
    for k in range(len(scores) - 1, 0, -1):
        path.append(int(back[k][path[-1]]))
    return [tags[i] for i in reversed(path)]


def morpheme_tags(text: str, morphemes) -> list[str]:
    """Per character: ``B-TAG``/``I-TAG`` of the morpheme covering it (objects with ``start``,
    ``len``, ``tag``, as Kiwi's tokens), else ``_``."""
    tags = ["_"] * len(text)
    for m in morphemes:
        for i in range(m.start, min(m.start + m.len, len(text))):
            tags[i] = ("B-" if i == m.start else "I-") + m.tag
    return tags


def morpheme_ids(text: str, morphemes) -> list[int]:
    """Per character: the ``id`` of the first morpheme covering it (objects with ``start``,
    ``len``, ``id``, as Kiwi's tokens), else -1. The first, because in a contraction such as
    했 (하 + 었) the first is the content morpheme."""
    ids = [-1] * len(text)
    for m in morphemes:
        for i in range(m.start, min(m.start + m.len, len(text))):
            if ids[i] < 0:
                ids[i] = m.id
    return ids


# --- spans <-> inline markup ("<이순신:PS> 장군은 …") ----------------------------------------

_ESCAPE = str.maketrans({"\\": "\\\\", "<": "\\<", ">": "\\>"})


def to_markup(text: str, spans: Sequence[Span], escape: bool = True) -> str:
    """Inline markup as KLUE writes it. With ``escape`` (the default), ``\\``, ``<`` and ``>``
    in the text are backslash-escaped so that :func:`parse_markup` recovers the text exactly;
    without it the output is KLUE's raw style, which is ambiguous for texts containing ``<``."""
    esc = (lambda s: s.translate(_ESCAPE)) if escape else (lambda s: s)
    out, pos = [], 0
    for span in sorted(spans):
        out.append(esc(text[pos : span.start]))
        out.append(f"<{esc(text[span.start : span.end])}:{span.label}>")
        pos = span.end
    out.append(esc(text[pos:]))
    return "".join(out)


class MarkupError(ValueError):
    """Markup that does not parse; the message says where."""


def parse_markup(markup: str, labels: Sequence[str] = LABELS, escaped: bool = True,
                 strict: bool = True) -> tuple[str, list[Span]]:
    """Inverse of :func:`to_markup`: the plain text and its spans.

    An entity is ``<surface:LABEL>`` with LABEL one of ``labels``; the label is taken after the
    last ``:`` so surfaces may contain colons. Raises :class:`MarkupError` on unbalanced markup,
    unless ``strict`` is False (for what a model wrote): then a ``<`` inside an entity restarts
    it, and a ``>`` without ``:LABEL``, a stray ``>`` or a never-closed ``<`` stay as text.
    """
    text: list[str] = []
    spans: list[Span] = []
    open_at, i = -1, 0

    def refuse(message: str) -> None:
        if strict:
            raise MarkupError(message)

    while i < len(markup):
        ch = markup[i]
        if escaped and ch == "\\" and i + 1 < len(markup):
            text.append(markup[i + 1])
            i += 2
            continue
        if ch == "<":
            if open_at >= 0:
                refuse(f"unexpected '<' at character {i} of {markup[:60]!r}; escape it as \\<")
                text.insert(open_at, "<")
            open_at = len(text)
        elif ch == ">" and open_at >= 0:
            surface = "".join(text[open_at:])
            head, colon, label = surface.rpartition(":")
            if colon and label in labels and head:
                del text[open_at + len(head) :]
                spans.append(Span(open_at, len(text), label))
            else:
                refuse(f"entity {surface!r} at character {i} has no ':LABEL' with LABEL in {list(labels)}")
                text.insert(open_at, "<")
                text.append(">")
            open_at = -1
        else:
            if ch == ">":
                refuse(f"unexpected '>' at character {i} of {markup[:60]!r}; escape it as \\>")
            text.append(ch)
        i += 1
    if open_at >= 0:
        refuse(f"entity opened at character {open_at} is never closed in {markup[:60]!r}")
        text.insert(open_at, "<")
    return "".join(text), spans


# --- characters <-> subword tokens ---------------------------------------------------------

def trim_offsets(text: str, offsets: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """Shrink each token's character range to exclude whitespace (SentencePiece pieces such as
    ``▁장`` may report the space before the word). Special tokens keep ``(0, 0)``; a token that
    covers only whitespace becomes empty ``(e, e)``."""
    return [trim(text, start, end) for start, end in offsets]


def trim(text: str, start: int, end: int) -> tuple[int, int]:
    """``text[start:end]``'s range without whitespace at either end; ``(end, end)`` when nothing
    else is in it."""
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def split_pieces(text: str, cuts: Collection[int] = ()) -> list[tuple[int, int]]:
    """``text``'s whitespace-delimited words, also cut before each position in ``cuts`` (such as
    morpheme starts), as ``[start, end)`` character ranges: every non-space character lies in
    exactly one piece, in order. Positions in ``cuts`` outside a word change nothing."""
    pieces: list[tuple[int, int]] = []
    for m in _EOJEOL.finditer(text):
        s, e = m.span()
        inner = sorted(c for c in set(cuts) if s < c < e)
        pieces += list(zip([s] + inner, inner + [e]))
    return pieces


def piece_words(text: str, pieces: Sequence[tuple[int, int]]) -> list[str]:
    """Each piece's text, with one leading space where the piece begins a word (at the start of
    ``text`` or after whitespace), so a SentencePiece tokenizer marks word starts (``▁``) there and
    only there, as it does on the raw text."""
    return [(" " if s == 0 or text[s - 1].isspace() else "") + text[s:e] for s, e in pieces]


def piece_offsets(pieces: Sequence[tuple[int, int]], words: Sequence[str], word_ids: Sequence[int | None],
                  offsets: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """Character ranges over the whole text of the subwords of ``words`` (:func:`piece_words`)
    tokenized with ``is_split_into_words``, whose offsets index their own word. A lone ``▁``
    subword (the added space alone) covers no character, as on raw text once
    :func:`trim_offsets` has removed the space. Tokens of no word (special tokens) become ``(0, 0)``."""
    out = []
    for w, (s, e) in zip(word_ids, offsets):
        if w is None:
            out.append((0, 0))
            continue
        lead = len(words[w]) - (pieces[w][1] - pieces[w][0])
        out.append((pieces[w][0] + max(s - lead, 0), pieces[w][0] + max(e - lead, 0)))
    return out


def token_tags_from_chars(char_tags: Sequence[str], offsets: Sequence[tuple[int, int]]) -> list[str | None]:
    """Label each token from the characters it covers: the tag of its first character.
    Tokens covering no character (special, padding, whitespace-only) get ``None`` (ignored in
    the loss). ``offsets`` must be trimmed (:func:`trim_offsets`)."""
    return [char_tags[s] if e > s else None for s, e in offsets]


def chars_from_token_tags(n_chars: int, token_tags: Sequence[str | None], offsets: Sequence[tuple[int, int]]) -> list[str]:
    """Spread token predictions back over characters: a token's first character takes its tag,
    the rest continue it (``I-X``). Characters that no token covers stay ``O``. An entity
    boundary that falls inside a token cannot be expressed, and is scored as the error it is."""
    tags = [OUTSIDE] * n_chars
    for tag, (s, e) in zip(token_tags, offsets):
        if tag is None or e <= s:
            continue
        tags[s] = tag
        inside = f"I-{tag[2:]}" if tag != OUTSIDE else OUTSIDE
        for i in range(s + 1, e):
            tags[i] = inside
    return tags


def windows(n: int, size: int, stride: int) -> list[tuple[int, int]]:
    """Overlapping ``[start, end)`` windows of at most ``size`` items covering ``range(n)``;
    consecutive windows overlap by ``stride`` items (as in ``return_overflowing_tokens``)."""
    if size <= stride:
        raise ValueError(f"window size {size} must exceed the stride {stride}")
    if n <= size:
        return [(0, n)]
    out, start = [], 0
    while True:
        end = min(start + size, n)
        out.append((start, end))
        if end == n:
            return out
        start = end - stride


def owner_window(wins: Sequence[tuple[int, int]]) -> list[int]:
    """For each item, the index of the window in which it lies farthest from an edge, so
    merged predictions always come from the window with the most context around the item."""
    n = wins[-1][1]
    best = [-1] * n
    depth = [-1] * n
    for w, (s, e) in enumerate(wins):
        for i in range(s, e):
            d = min(i - s, e - 1 - i)
            if d > depth[i]:
                best[i], depth[i] = w, d
    return best


# --- eojeol (whitespace-delimited word) structure, used by the feature-based models -------


def eojeol_positions(text: str) -> list[str]:
    """Per character: ``B``/``I``/``E``/``S`` within its eojeol, or ``_`` for whitespace."""
    pos = ["_"] * len(text)
    for m in _EOJEOL.finditer(text):
        s, e = m.span()
        if e - s == 1:
            pos[s] = "S"
        else:
            pos[s], pos[e - 1] = "B", "E"
            for i in range(s + 1, e - 1):
                pos[i] = "I"
    return pos


def bridge_uncovered(char_tags: Sequence[str], offsets: Sequence[tuple[int, int]]) -> list[str]:
    """Give ``I-X`` to the characters no token covers (the space between two words, characters the
    tokenizer drops) when they lie inside one entity: after a character of entity ``X`` and before
    a token tagged ``I-X``. KLUE tags the space in "조선 시대" as part of the entity, and
    :func:`chars_from_token_tags` leaves uncovered characters ``O``, which would split it."""
    covered = [False] * len(char_tags)
    for s, e in offsets:
        covered[s:e] = [True] * (e - s)
    out = list(char_tags)
    prev, gap = OUTSIDE, -1  # tag of the last covered character; start of the current gap
    for i, is_covered in enumerate(covered):
        if not is_covered:
            gap = i if gap < 0 else gap
            continue
        if gap >= 0 and prev != OUTSIDE and out[i] == f"I-{prev[2:]}":
            out[gap:i] = [out[i]] * (i - gap)
        prev, gap = out[i], -1
    return out
