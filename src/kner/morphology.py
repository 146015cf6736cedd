"""One Kiwi morphological analyser per process, shared by every model that reads morphemes
(loading Kiwi's model takes about a second and some 100 MB, so it is built once, on first use)."""
from __future__ import annotations

from collections.abc import Sequence
from functools import cache


@cache
def kiwi():
    """The shared ``kiwipiepy.Kiwi``; its ``tokenize(list)`` analyses on all cores."""
    from kiwipiepy import Kiwi

    return Kiwi(num_workers=-1)


def morpheme_starts(texts: Sequence[str]) -> list[set[int]]:
    """Per text, the character positions where Kiwi starts a morpheme (code-point offsets into
    the text as given, as Kiwi reports them)."""
    return [{m.start for m in tokens} for tokens in kiwi().tokenize(list(texts))]
