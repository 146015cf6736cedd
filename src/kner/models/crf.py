"""A syllable-level linear-chain CRF (python-crfsuite) with features chosen for Korean."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from ..align import bio_to_spans, eojeol_positions, spans_to_bio
from ..types import Example, Span
from .base import Tagger

MODEL_FILE = "model.crfsuite"


@dataclass
class CRFConfig:
    c1: float = 0.05
    """L1 penalty (sparsity)."""
    c2: float = 0.05
    """L2 penalty."""
    max_iterations: int = 150
    """L-BFGS iterations."""
    window: int = 2
    """Syllable unigrams from i-window to i+window."""
    ngrams: bool = True
    """Syllable bigrams and trigrams around the syllable."""
    char_class: bool = True
    """Hangul / digit / Latin / Hanja / symbol class of the syllable and its neighbours."""
    eojeol: bool = True
    """Position in the eojeol (B/I/E/S) and the eojeol's prefixes and suffixes."""
    kiwi: bool = False
    """Part-of-speech tags from the Kiwi morphological analyser (slower; see README)."""
    min_freq: int = 1
    """Drop features seen fewer times than this in training (crfsuite's feature.minfreq)."""


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
        self._kiwi = None
        if config.kiwi:
            from kiwipiepy import Kiwi

            self._kiwi = Kiwi(num_workers=-1)

    def pos_tags(self, text: str) -> list[str]:
        """Per character: ``B-TAG``/``I-TAG`` of the Kiwi morpheme covering it, else ``_``."""
        tags = ["_"] * len(text)
        for tok in self._kiwi.tokenize(text):
            for i in range(tok.start, min(tok.start + tok.len, len(text))):
                tags[i] = ("B-" if i == tok.start else "I-") + tok.tag
        return tags

    def __call__(self, text: str) -> list[list[str]]:
        cfg, n, w = self.config, len(text), self.config.window
        pad = "␂" * w + text.replace(" ", "_") + "␃" * w
        classes = [char_class(c) for c in pad] if cfg.char_class else None
        feats: list[list[str]] = []
        if cfg.eojeol:
            pos = eojeol_positions(text)
            words = [""] * n
            offs = [0] * n
            start = 0
            for tok in text.split(" "):
                for k in range(len(tok)):
                    words[start + k], offs[start + k] = tok, k
                start += len(tok) + 1
        ptags = self.pos_tags(text) if self._kiwi else None
        for i in range(n):
            j = i + w
            f = ["b", "c=" + pad[j]]
            f += [f"c{d}={pad[j + d]}" for d in range(-w, w + 1) if d]
            if cfg.ngrams:
                f += ["b-1=" + pad[j - 1 : j + 1], "b+1=" + pad[j : j + 2],
                      "t-1=" + pad[j - 1 : j + 2], "t-2=" + pad[j - 2 : j + 1], "t+2=" + pad[j : j + 3]]
            if cfg.char_class:
                f += ["k=" + classes[j], "k3=" + "".join(classes[j - 1 : j + 2])]
            if cfg.eojeol:
                word, k = words[i], offs[i]
                f += ["p=" + pos[i], "w0=" + word[:1], "w1=" + word[:2], "we1=" + word[-1:], "we2=" + word[-2:],
                      "wl=" + str(min(len(word), 6)), "pre=" + word[:k], "suf=" + word[k:][:3]]
            if ptags:
                f += ["m=" + ptags[i], "m-1=" + (ptags[i - 1] if i else "^"), "m+1=" + (ptags[i + 1] if i + 1 < n else "$")]
            feats.append(f)
        return feats


class CRFTagger(Tagger):
    """Classic baseline: per-syllable features, IOB2 tags, L-BFGS trained linear-chain CRF."""

    family = "crf"
    Config = CRFConfig

    def __init__(self, config: CRFConfig | None = None, **overrides) -> None:
        super().__init__(config, **overrides)
        self.featurizer = Featurizer(self.config)
        self._tagger = None

    def fit(self, train: Sequence[Example], dev: Sequence[Example] | None = None) -> "CRFTagger":
        import tempfile
        import time

        import pycrfsuite

        start = time.perf_counter()
        trainer = pycrfsuite.Trainer(verbose=False)
        for ex in tqdm(train, desc="crf features", unit="sent", leave=False):
            if ex.text:
                trainer.append(self.featurizer(ex.text), spans_to_bio(ex.text, ex.spans))
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
        return [bio_to_spans(self._tagger.tag(self.featurizer(t))) for t in texts]

    def _save(self, directory: Path) -> None:
        if self._tagger is None:
            raise RuntimeError("cannot save an untrained CRF")
        (directory / MODEL_FILE).write_bytes(self._blob)

    @classmethod
    def _load(cls, directory: Path, config: CRFConfig) -> "CRFTagger":
        tagger = cls(config)
        tagger._open((directory / MODEL_FILE).read_bytes())
        return tagger
