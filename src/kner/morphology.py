"""One Kiwi morphological analyser per process, shared by every model that reads morphemes
(loading Kiwi's model takes about a second and some 100 MB, so it is built once, on first use)."""
from __future__ import annotations

from collections.abc import Sequence
from functools import cache


@cache
def kiwi():
    """The shared ``kiwipiepy.Kiwi``; its ``tokenize(list)`` analyses on all cores."""
    try:
        from kiwipiepy import Kiwi
    except ImportError as exc:  # e.g. a GPU machine without it: name the settings that do without Kiwi
        raise ImportError("Kiwi's morphological analysis needs kiwipiepy (pip install kiwipiepy), or turn the Kiwi "
                          "features off: bilstm-crf --kiwi-dim 0 --kiwi-vectors 0, crf --no-kiwi --no-lexicon, "
                          "bert --pretokenize none") from exc

    return Kiwi(num_workers=-1)


def morpheme_starts(texts: Sequence[str]) -> list[set[int]]:
    """Per text, the character positions where Kiwi starts a morpheme (code-point offsets into
    the text as given, as Kiwi reports them)."""
    return [{m.start for m in tokens} for tokens in kiwi().tokenize(list(texts))]


@cache
def _placeholders() -> dict[str, int]:
    """Tag -> id of Kiwi's formless morpheme of that tag (the first ids; unknown words get them)."""
    out, i = {}, 0
    while not (m := kiwi().morpheme(i)).form:
        out.setdefault(m.tag, i)
        i += 1
    return out


@cache  # called per character for morphemes outside a model's table
def kiwi_placeholder(kiwi_id: int) -> int | None:
    """The formless morpheme of this morpheme's tag (None for a tag without one)."""
    return _placeholders().get(kiwi().morpheme(kiwi_id).tag)


def first_vocabulary_id() -> int:
    """Kiwi's first id with a surface form; its dictionary follows, common morphemes first (ids
    below 30,000 cover 91% of the morphemes in KLUE's first 1,000 dev sentences)."""
    return max(_placeholders().values()) + 1


@cache
def kiwi_size() -> int:
    """How many morpheme ids Kiwi's model has (found by bisection: ``morpheme`` refuses others)."""
    lo, hi = 0, 1 << 24
    while hi - lo > 1:
        mid = (lo + hi) // 2
        try:
            kiwi().morpheme(mid)
            lo = mid
        except ValueError:
            hi = mid
    return hi


def kiwi_model_version() -> str | None:
    """Version of Kiwi's model package: morpheme ids are only meaningful within one. None without
    it, so that a machine without Kiwi still loads models that do not read its morphemes."""
    try:
        from kiwipiepy_model import __version__
    except ImportError:
        return None
    return __version__


def _has_vector(kiwi_id: int) -> bool:
    import numpy as np

    return bool(np.isfinite(kiwi().morpheme_similarity(kiwi_id, kiwi_id)))  # NaN: no embedding


@cache
def _basis(dim: int, n_anchors: int = 512) -> tuple:
    """Anchor ids and the map from similarities-to-anchors to ``dim`` coordinates."""
    import numpy as np

    sim = kiwi().morpheme_similarity
    anchors, i = [], first_vocabulary_id()
    while len(anchors) < n_anchors:
        if _has_vector(i):
            anchors.append(i)
        i += 1
    gram = np.array([[sim(a, b) for b in anchors] for a in anchors])  # (anchors, anchors)
    values, vectors = np.linalg.eigh(gram)
    rank = int((values > 1e-6 * values.max()).sum())  # the embeddings' size (256 in Kiwi 0.24's model)
    if not 0 < dim <= rank:
        raise ValueError(f"Kiwi's morpheme vectors have {rank} dimensions; ask for 1 to {rank}, not {dim}")
    top = np.argsort(values)[::-1][:dim]
    return anchors, vectors[:, top] / np.sqrt(values[top])  # (anchors, dim)


def morpheme_vectors(ids: Sequence[int], dim: int) -> "np.ndarray":
    """``(len(ids), dim)`` coordinates of Kiwi's CoNg-model embeddings of these morphemes.

    Kiwi exposes its language model's morpheme embeddings only through cosine similarity, so
    they are read back by hand: a morpheme's similarities to fixed anchor morphemes are a linear
    image of its unit embedding, and whitening by the anchors' Gram matrix gives its coordinates
    in the anchors' top-``dim`` principal subspace. A morpheme without an embedding (Kiwi has
    none for some allomorphs) takes its tag's formless morpheme's; failing that, zeros.
    """
    import numpy as np

    k, (anchors, proj) = kiwi(), _basis(dim)
    rows = np.zeros((len(ids), len(anchors)))
    for r, i in enumerate(ids):
        for j in (i, kiwi_placeholder(i)):
            if j is not None and _has_vector(j):
                rows[r] = [k.morpheme_similarity(j, a) for a in anchors]
                break
    return rows @ proj
