"""Kiwi's dictionaries as feature tables, read without Kiwi's analysis: a proper-noun gazetteer
(names that KLUE's training data never shows) and a morpheme lexicon (part-of-speech hints).

``kiwipiepy_model`` (Apache-2.0, installed with kiwipiepy) ships ``multi.dict``, about 198,000
multi-word proper nouns each tagged with its Wikidata class (Q5 human, Q476028 football club, ...),
and ``default.dict``, about 113,000 proper nouns without a class. The classes are not mapped onto
PS / LC / OG by hand: each becomes a feature value and the model learns what it means for KLUE.
The lexicon comes from the morpheme list of the same package's model (about 250,000 surface
forms with their part-of-speech tags). The dictionaries are read once, when a model is trained;
the derived table is saved with it.
"""
from __future__ import annotations

import functools
import gzip
from collections import Counter, defaultdict
from pathlib import Path

FILE = "gazetteer.tsv.gz"
LEXICON_FILE = "lexicon.tsv.gz"
MIN_CLASS = 300
"""Wikidata classes with fewer entries are pooled into one value, ``Q`` (the rare ones are noise)."""
UNCLASSED = "NNP"
"""The value of a ``default.dict`` proper noun, which has no class."""


def _entries(path: Path):
    """(surface, fields) of each proper-noun line of a Kiwi dictionary (tab-separated, # comments)."""
    with open(path, encoding="utf-8") as f:
        for line in f:
            fields = line.rstrip("\n").split("\t")
            # Field 2 is the tag NNP, or the canonical form of a variant spelling ("더글러스 애덤스/NNP").
            if len(fields) >= 2 and not line.startswith("#") and fields[1].endswith("NNP") and len(fields[0]) >= 2:
                yield fields[0], fields


@functools.lru_cache(maxsize=2)  # each fit would otherwise reread 300,000 lines; the table is shared: never modify it
def from_kiwi(min_class: int = MIN_CLASS) -> dict[str, str]:
    """Surface form -> class, from the installed ``kiwipiepy_model``; multi.dict wins over default.dict."""
    import kiwipiepy_model  # installed with kiwipiepy, a base dependency

    root = Path(kiwipiepy_model.get_model_path())
    if not (root / "multi.dict").exists():
        raise FileNotFoundError(f"kiwipiepy_model {kiwipiepy_model.__version__} has no multi.dict; "
                                "pip install -U kiwipiepy, or turn the gazetteer features off")
    table = {surface: UNCLASSED for surface, _ in _entries(root / "default.dict")}
    classed = {surface: f[3].lstrip("# ").strip() or "Q" for surface, f in _entries(root / "multi.dict") if len(f) >= 4}
    sizes = Counter(classed.values())
    table.update({surface: cls if sizes[cls] >= min_class else "Q" for surface, cls in classed.items()})
    return table


class _Table:
    """A surface -> value table that a model saves beside its weights, indexed for longest match."""

    file: str
    prefix = 1
    """Characters of an entry that index the lengths of the entries starting with them."""
    max_len: int | None = None
    """Longer entries are never matched (None: no bound)."""

    def __init__(self, table: dict[str, str]) -> None:
        self.table = table
        lengths = defaultdict(set)
        for surface in table:
            if self.max_len is None or len(surface) <= self.max_len:
                lengths[surface[: self.prefix]].add(len(surface))
        self._lengths = {k: sorted(v, reverse=True) for k, v in lengths.items()}

    def save(self, directory: Path) -> None:
        with gzip.open(directory / self.file, "wt", encoding="utf-8") as f:
            f.writelines(f"{surface}\t{value}\n" for surface, value in sorted(self.table.items()))

    @classmethod
    def load(cls, directory: Path):
        with gzip.open(directory / cls.file, "rt", encoding="utf-8") as f:
            return cls(dict(line.rstrip("\n").split("\t", 1) for line in f))


class Gazetteer(_Table):
    """Greedy longest match of the table's names, starting where a word starts."""

    file = FILE
    prefix = 2  # every name has two characters or more

    def tags(self, text: str) -> list[str]:
        """Per character: ``B-CLASS`` / ``I-CLASS`` of the name matched over it, else ``O``."""
        out, i, n = ["O"] * len(text), 0, len(text)
        while i < n:
            if text[i].isalnum() and (i == 0 or not text[i - 1].isalnum()):
                for length in self._lengths.get(text[i : i + 2], ()):
                    cls = self.table.get(text[i : i + length]) if i + length <= n else None
                    if cls:
                        out[i : i + length] = ["B-" + cls] + ["I-" + cls] * (length - 1)
                        i += length - 1
                        break
            i += 1
        return out


FAMILIES = (("J", "J"), ("E", "E"), ("V", "V"), ("MA", "M"), ("MM", "M"), ("S", "S"), ("XS", "XS"))
"""Tag prefix -> family: particles, endings, predicates, modifiers, symbols and suffixes are pooled
(their members matter less for names than that they are one); nouns, roots and the rest stay apart."""
NOT_FORMS = ("UN", "P", "Z_", "W_", "USER")
"""Kiwi's tags of entries that are not plain surface forms (fragments, codas, patterns)."""


def tag_family(tag: str) -> str:
    tag = tag.split("-")[0]  # VV-R, VA-I: irregular conjugation classes of the same tag
    return next((family for prefix, family in FAMILIES if tag.startswith(prefix)), tag)


@functools.lru_cache(maxsize=1)  # about five seconds; the table is shared: never modify it
def lexicon_from_kiwi() -> dict[str, str]:
    """Surface form -> its ambiguity class, the sorted tag families it can take ("J|NNG"), over
    every morpheme of the installed Kiwi model (about 250,000 forms)."""
    from .morphology import kiwi, kiwi_size

    analyser, families = kiwi(), defaultdict(set)
    for i in range(kiwi_size()):
        m = analyser.morpheme(i)
        if m.form and " " not in m.form and not m.tag.startswith(NOT_FORMS):
            families[m.form].add(tag_family(m.tag))
    return {form: "|".join(sorted(fams)) for form, fams in families.items()}


class Lexicon(_Table):
    """Greedy longest match of Kiwi's morpheme forms inside each run of letters and digits: per
    character the ambiguity class of the form matched over it. A part-of-speech hint at a small
    fraction of the cost of Kiwi's analysis, which searches a language model for the best reading."""

    file = LEXICON_FILE
    max_len = 12  # a few long compounds are lost; it bounds the work per character

    def tags(self, text: str) -> list[str]:
        """Per character: ``B-CLASS`` / ``I-CLASS`` of the form matched over it, ``U`` for a letter
        or digit no form covers, ``O`` for spaces and punctuation."""
        out, i, n = ["O"] * len(text), 0, len(text)
        while i < n:
            end = i
            while end < n and text[end].isalnum():
                end += 1
            while i < end:
                for length in self._lengths.get(text[i], ()):
                    if i + length <= end and (cls := self.table.get(text[i : i + length])):
                        out[i : i + length] = ["B-" + cls] + ["I-" + cls] * (length - 1)
                        i += length
                        break
                else:
                    out[i] = "U"
                    i += 1
            i += 1
        return out
