"""A syllable-level linear-chain CRF (python-crfsuite) with features chosen for Korean."""
from __future__ import annotations

import os
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from ..align import bio_to_spans, eojeol_positions, morpheme_tags, spans_to_bio
from ..gazetteer import Gazetteer, Lexicon, from_kiwi, lexicon_from_kiwi
from ..morphology import kiwi
from ..types import Example, Span
from .base import Tagger

MODEL_FILE = "model.crfsuite"


@dataclass
class CRFConfig:
    c1: float = 0.05
    """L1 penalty (sparsity)."""
    c2: float = 0.5
    """L2 penalty."""
    max_iterations: int = 150
    """L-BFGS iterations."""
    window: int = 3
    """Syllable unigrams from i-window to i+window."""
    ngrams: bool = True
    """Syllable bigrams and trigrams around the syllable."""
    char_class: bool = True
    """Hangul / digit / Latin / Hanja / symbol class of the syllable and its neighbours."""
    eojeol: bool = False
    """Position in the eojeol (B/I/E/S), its first and last syllables and its length
    (off by default: it lowered F1; docs/experiments.md)."""
    affixes: bool = False
    """Up to three syllables of the eojeol before and after the syllable (stems, particles;
    off by default: it lowered F1; docs/experiments.md)."""
    kiwi: bool = True
    """Part-of-speech tags from the Kiwi morphological analyser (more accurate, several times slower
    inference; docs/experiments.md)."""
    gazetteer: bool = False
    """Whether each syllable lies in a proper noun of Kiwi's dictionaries, and that name's Wikidata
    class (kner.gazetteer; the derived table is saved with the model)."""
    lexicon: bool = True
    """The tag families Kiwi's lexicon gives the form matched over each syllable, alone, with the
    syllable and with its neighbours': part-of-speech hints without Kiwi's analysis
    (kner.gazetteer.Lexicon; the table is saved with the model)."""
    min_freq: int = 1
    """Drop features seen fewer times than this in training (crfsuite's feature.minfreq)."""
    workers: int = 1
    """Processes that tag a batch of at least PARALLEL_MIN texts (0: one per CPU core): featurising
    and crfsuite's tagging hold the GIL, so only processes use a second core."""


def char_class(ch: str) -> str:
    o = ord(ch)
    if 0xAC00 <= o <= 0xD7A3:
        return "H"
    if ch.isdigit():
        return "D"
    if ch.isspace():
        return "S"
    if ch.isascii() and ch.isalpha():
        return "L"
    if 0x4E00 <= o <= 0x9FFF or 0x3400 <= o <= 0x4DBF or 0xF900 <= o <= 0xFAFF:
        return "C"
    if 0x3130 <= o <= 0x318F or 0x1100 <= o <= 0x11FF:
        return "J"
    return "P" if not ch.isalnum() else "A"


class Featurizer:
    """Turns a text into one feature list per character (crfsuite's string features)."""

    def __init__(self, config: CRFConfig) -> None:
        self.config = config
        self._kiwi = kiwi() if config.kiwi else None
        self.gazetteer: Gazetteer | None = None  # these two are set by fit (from Kiwi's dictionaries) or load
        self.lexicon: Lexicon | None = None

    def many(self, texts: list[str]):
        """Features of each text, lazily; Kiwi analyses the whole list on its thread pool."""
        analyses = self._kiwi.tokenize(texts) if self._kiwi else (None for _ in texts)
        for text, tokens in zip(texts, analyses):
            yield self._features(text, tokens)

    def _features(self, text: str, tokens) -> list[list[str]]:
        # Built column by column (one list comprehension per feature template) and zipped into
        # rows: about twice as fast as appending per character, and featurising dominates predict.
        cfg, n, w = self.config, len(text), self.config.window
        pad = "␂" * w + text.replace(" ", "_") + "␃" * w
        cols: list[list[str]] = [["b"] * n, ["c=" + c for c in text]]
        cols += [[f"c{d}=" + c for c in pad[w + d : w + d + n]] for d in range(-w, w + 1) if d]
        if cfg.ngrams:
            for name, lo, hi in (("b-1", -1, 1), ("b+1", 0, 2), ("t-1", -1, 2), ("t-2", -2, 1), ("t+2", 0, 3)):
                cols.append([name + "=" + pad[j + lo : j + hi] for j in range(w, w + n)])
        if cfg.char_class:
            classes = "".join(char_class(c) for c in "␂" + text + "␃")
            cols.append(["k=" + c for c in classes[1:-1]])
            cols.append(["k3=" + classes[i : i + 3] for i in range(n)])
        if cfg.eojeol or cfg.affixes:
            cols += self._eojeol_columns(text, cfg.eojeol, cfg.affixes)
        if self._kiwi:
            cols += self._tag_columns("m", morpheme_tags(text, tokens))
        if self.gazetteer:
            cols += self._tag_columns("g", self.gazetteer.tags(text))
        if self.lexicon:
            cols += self._tag_columns("x", self.lexicon.tags(text), text)
        return [list(row) for row in zip(*cols)]

    @staticmethod
    def _tag_columns(name: str, tags: list[str], text: str | None = None) -> list[list[str]]:
        """A per-character tag and its neighbours' tags; given the text, also each syllable joined to
        its tag (이 as a particle, or inside a name) and the pairs of neighbouring tags."""
        before, after = ["^"] + tags[:-1], tags[1:] + ["$"]
        cols = [[f"{name}={t}" for t in tags], [f"{name}-1={t}" for t in before], [f"{name}+1={t}" for t in after]]
        if text is not None:
            cols += [[f"c{name}={c}{t}" for c, t in zip(text, tags)],
                     [f"{name}p={a}/{t}" for a, t in zip(before, tags)],
                     [f"{name}n={t}/{a}" for t, a in zip(tags, after)]]
        return cols

    @staticmethod
    def _eojeol_columns(text: str, shape: bool, affixes: bool) -> list[list[str]]:
        """Per character: position in its eojeol, the eojeol's first/last syllables and length,
        and the part of the eojeol before and after the character (stems, particles)."""
        word_of, off = [], []
        for tok in text.split(" "):
            word_of += [tok] * len(tok) + [""]
            off += list(range(len(tok))) + [0]
        word_of, off = word_of[: len(text)], off[: len(text)]
        cols = []
        if shape:
            cols += [
                ["p=" + p for p in eojeol_positions(text)],
                ["w0=" + wd[:1] for wd in word_of],
                ["w1=" + wd[:2] for wd in word_of],
                ["we1=" + wd[-1:] for wd in word_of],
                ["we2=" + wd[-2:] for wd in word_of],
                ["wl=" + str(min(len(wd), 6)) for wd in word_of],
            ]
        if affixes:
            cols += [
                ["pre=" + wd[max(0, k - 3) : k] for wd, k in zip(word_of, off)],
                ["suf=" + wd[k : k + 3] for wd, k in zip(word_of, off)],
            ]
        return cols


PARALLEL_MIN = 256
"""Smaller batches are tagged in the calling process: the hand-over would cost more than it saves."""

_worker: "CRFTagger | None" = None  # the tagger of a worker process


def _start_worker(config: CRFConfig, blob: bytes, gazetteer: Gazetteer | None, lexicon: Lexicon | None) -> None:
    global _worker
    _worker = CRFTagger(config, workers=1)
    _worker._open(blob)
    _worker.featurizer.gazetteer, _worker.featurizer.lexicon = gazetteer, lexicon


def _tag_in_worker(texts: list[str]) -> list[list[Span]]:
    return _worker._predict(texts)


class CRFTagger(Tagger):
    """Classic baseline: per-syllable features, IOB2 tags, L-BFGS trained linear-chain CRF."""

    family = "crf"
    Config = CRFConfig
    selects = False  # L-BFGS for a fixed number of iterations: nothing to choose on validation
    runtime_settings = ("workers",)
    former_defaults = {"lexicon": False}  # models saved before the lexicon features

    def __init__(self, config: CRFConfig | None = None, **overrides) -> None:
        super().__init__(config, **overrides)
        self.featurizer = Featurizer(self.config)
        self._tagger = None
        self._pool = None

    def fit(self, train: Sequence[Example], valid: Sequence[Example] | None = None) -> "CRFTagger":
        import tempfile
        import time

        import pycrfsuite

        start = time.perf_counter()
        trainer = pycrfsuite.Trainer(verbose=False)
        train = [ex for ex in train if ex.text]
        if self.config.gazetteer:
            self.featurizer.gazetteer = Gazetteer(from_kiwi())
        if self.config.lexicon:
            self.featurizer.lexicon = Lexicon(lexicon_from_kiwi())
        features = self.featurizer.many([ex.text for ex in train])
        for ex, xseq in tqdm(zip(train, features), total=len(train), desc="crf features", unit="sent", leave=False):
            trainer.append(xseq, spans_to_bio(ex.text, ex.spans))
        cfg = self.config
        trainer.set_params({"c1": cfg.c1, "c2": cfg.c2, "max_iterations": cfg.max_iterations,
                            "feature.minfreq": cfg.min_freq, "feature.possible_transitions": True})
        bar = tqdm(total=cfg.max_iterations, desc="crf L-BFGS", unit="it", leave=False)
        trainer.message = lambda _msg: None
        trainer.on_iteration = lambda log, info: bar.update(1)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / MODEL_FILE
            trainer.train(str(path))
            bar.close()
            self._open(path.read_bytes())
        self.train_seconds = time.perf_counter() - start
        return self

    def _open(self, blob: bytes) -> None:
        import pycrfsuite

        self._blob = blob
        self._tagger = pycrfsuite.Tagger()
        self._tagger.open_inmemory(blob)

    def _predict(self, texts: list[str]) -> list[list[Span]]:
        if self._tagger is None:
            raise RuntimeError("this CRF is not trained yet: call fit() or kner.load() first")
        workers = self.config.workers or os.cpu_count() or 1
        if workers > 1 and len(texts) >= PARALLEL_MIN:
            size = -(-len(texts) // (4 * workers))  # a few chunks per worker even out their speeds
            chunks = [texts[i : i + size] for i in range(0, len(texts), size)]
            return [spans for chunk in self._workers(workers).map(_tag_in_worker, chunks) for spans in chunk]
        return [bio_to_spans(self._tagger.tag(xseq)) for xseq in self.featurizer.many(texts)]

    def _workers(self, n: int):
        """A pool kept for the tagger's lifetime. Spawned, not forked: a fork would copy Kiwi's
        thread pool without its threads."""
        if self._pool is None:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            tables = self.featurizer.gazetteer, self.featurizer.lexicon
            self._pool = ProcessPoolExecutor(n, multiprocessing.get_context("spawn"), _start_worker,
                                             (self.config, self._blob, *tables))
            weakref.finalize(self, self._pool.shutdown, cancel_futures=True)
        return self._pool

    def _save(self, directory: Path) -> None:
        if self._tagger is None:
            raise RuntimeError("cannot save an untrained CRF")
        (directory / MODEL_FILE).write_bytes(self._blob)
        for table in (self.featurizer.gazetteer, self.featurizer.lexicon):
            if table:
                table.save(directory)

    @classmethod
    def _load(cls, directory: Path, config: CRFConfig) -> "CRFTagger":
        tagger = cls(config)
        tagger._open((directory / MODEL_FILE).read_bytes())
        if config.gazetteer:
            tagger.featurizer.gazetteer = Gazetteer.load(directory)
        if config.lexicon:
            tagger.featurizer.lexicon = Lexicon.load(directory)
        return tagger
