"""The interface every model family implements, and the self-describing model directory."""
from __future__ import annotations

import json
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, ClassVar

from ..types import LABELS, Example, Span, validate_spans

META_FILE = "kner.json"


class ModelDirError(ValueError):
    """A model directory that is missing, damaged, or of another kind."""


@dataclass
class EpochRecord:
    """One line of an epoch-trained model's training log."""

    epoch: int
    seconds: float
    """Training time of the epoch, scoring the held-out examples not included."""
    train_loss: float
    valid_f1: float | None = None
    """Micro F1 on the held-out selection examples (the validation split carved from train,
    or dev where selection on dev was asked for by name)."""
    valid_sentences: int | None = None
    """How many sentences ``valid_f1`` was scored on (a family may cap it, as generation is slow)."""
    eval_seconds: float = 0.0
    """Time spent scoring the held-out examples after the epoch."""
    dev_f1: float | None = None
    """Dev F1 of the epoch when the caller asked to monitor dev (``Tagger.monitor``): recorded
    only to measure what choosing on dev would have reported; it chooses nothing."""

    @classmethod
    def from_dict(cls, record: dict) -> "EpochRecord":
        """Read a record; models saved before validation splits existed chose on dev_f1 (dev_sentences)."""
        if "valid_f1" not in record and "dev_f1" in record:
            record = {("valid_sentences" if k == "dev_sentences" else "valid_f1" if k == "dev_f1" else k): v
                      for k, v in record.items()}
        return cls(**record)


class Tagger(ABC):
    """A named-entity tagger: ``fit`` on examples, ``predict`` spans for texts, ``save``/``load``.

    Subclasses set ``family`` and ``Config`` (a dataclass holding every hyperparameter) and
    implement ``fit``, ``_predict``, ``_save`` and ``_load``. :meth:`predict` is pure: it never
    mutates its input and answers every text, empty or not, with spans that index it exactly.
    """

    family: ClassVar[str]
    Config: ClassVar[type]
    labels: tuple[str, ...] = LABELS
    runtime_settings: ClassVar[tuple[str, ...]] = ()
    """Config fields that change how a trained model runs, not what it learned (precision, batch
    size…): ``kner benchmark`` applies ``--set`` values of these to a model it reuses."""
    selects: ClassVar[bool] = True
    """Whether ``fit`` chooses anything on held-out examples (an epoch, a setting); a family that
    does not trains on the whole training split instead of giving up a validation part."""
    epoch_trained: ClassVar[bool] = False
    """Whether ``fit`` keeps the best of several epochs (:class:`~kner.models.selection.EpochSelector`),
    so that :func:`~kner.models.selection.refit` can train again for the epoch count it chose."""
    former_defaults: ClassVar[dict] = {}
    """Settings whose default changed, with the value a model saved before the change ran with:
    its ``kner.json`` lacks them, and loading must not give it the new default."""
    benchmark_limits: ClassVar[dict[str, int]] = {}
    """Default train/dev sentence caps for ``kner benchmark`` (e.g. ``{"train": 2000, "dev": 500}``
    for families too slow for the full data on a CPU); the report states them."""

    @classmethod
    def runtime_overrides(cls, overrides: dict) -> dict:
        """Those of ``overrides`` that are this family's runtime settings."""
        return {k: v for k, v in overrides.items() if k in cls.runtime_settings}

    def __init__(self, config: Any = None, **overrides: Any) -> None:
        base = config if config is not None else self.Config()
        self.config = type(base)(**{**asdict(base), **overrides})
        self.history: list[EpochRecord] = []
        self.train_seconds: float | None = None
        self.monitor: list[Example] = []
        """Examples scored after each epoch for the record only (``EpochRecord.dev_f1``); never chosen on."""
        self.provenance: dict = {}
        """How the model was made (data, validation split, selection, recipe), set by the caller
        of ``fit`` and saved in ``kner.json``: a saved model says what chose its epoch."""
        self.refit_epochs: int | None = None
        """Set by :func:`~kner.models.selection.refit`: train this many epochs and keep the last."""

    # --- to implement ---------------------------------------------------------------------
    @abstractmethod
    def fit(self, train: Sequence[Example], valid: Sequence[Example] | None = None) -> "Tagger":
        """Learn from ``train``. Epoch-trained families score ``valid`` after each epoch and keep the
        best epoch (``history``); ``valid`` must be held out of ``train`` and never be the examples
        the model is reported on (:func:`kner.data.split_validation` carves it from train)."""

    @abstractmethod
    def _predict(self, texts: list[str]) -> list[list[Span]]:
        """Spans for each non-blank text."""

    @abstractmethod
    def _save(self, directory: Path) -> None:
        """Write the weights (and tokenizer, vocabulary…) into ``directory``."""

    @classmethod
    @abstractmethod
    def _load(cls, directory: Path, config: Any) -> "Tagger":
        """Rebuild a ready tagger from what :meth:`_save` wrote."""

    # --- shared behaviour -----------------------------------------------------------------
    def predict(self, texts: Sequence[str]) -> list[list[Span]]:
        """Entity spans for each text, sorted by start."""
        if isinstance(texts, str):
            raise TypeError("predict takes a list of texts; wrap a single text as [text]")
        texts = list(texts)
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"text {i} is a {type(text).__name__}, not a str")
        todo = [i for i, t in enumerate(texts) if t.strip()]
        out: list[list[Span]] = [[] for _ in texts]
        for i, spans in zip(todo, self._predict([texts[i] for i in todo]) if todo else []):
            spans = sorted(spans)
            validate_spans(texts[i], spans)
            out[i] = spans
        return out

    def save(self, directory: str | Path, metrics: dict | None = None) -> Path:
        """Write a directory that :func:`kner.load` can restore without anything else."""
        from .. import __version__

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self._save(directory)
        meta = {
            "family": self.family,
            "config": asdict(self.config),
            "labels": list(self.labels),
            "metrics": metrics or {},
            "history": [asdict(r) for r in self.history],
            "train_seconds": self.train_seconds,
            "provenance": self.provenance,
            "kner_version": __version__,
            "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        write_meta(directory, meta)
        return directory

    @classmethod
    def from_meta(cls, directory: Path, meta: dict, overrides: dict | None = None) -> "Tagger":
        known, overrides = {f.name for f in fields(cls.Config)}, overrides or {}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(f"a {cls.family} model has no setting {', '.join(map(repr, unknown))}; "
                             f"its settings are {', '.join(sorted(known))}")
        # The thread count belongs to the machine and the run (a training run given one core of two
        # would otherwise serve on one core forever): a loaded model takes the default or an override.
        saved = {k: v for k, v in meta.get("config", {}).items() if k in known and k != "num_threads"}
        saved = {**cls.former_defaults, **saved}
        if saved.get("device") == "cuda" and "device" not in overrides and not _has_cuda():
            saved["device"] = "auto"  # trained with --device cuda, loaded on a machine without a GPU
        config = cls.Config(**{**saved, **overrides})
        if getattr(config, "device", None) == "cuda" and not _has_cuda():
            raise ValueError("device='cuda' but torch sees no GPU; load with device='cpu' or 'auto'")
        try:
            tagger = cls._load(directory, config)
        except (OSError, ValueError, KeyError, RuntimeError, TypeError) as exc:  # TypeError: a file's unknown field
            from .. import __version__

            saved_by = meta.get("kner_version", "an unknown version")
            fix = "retrain it" if saved_by == __version__ else f"retrain it, or install kner {saved_by} to read it"
            raise ModelDirError(f"{directory}: the {cls.family} model files are missing or damaged, or were written by "
                                f"a kner this one cannot read (saved by kner {saved_by}, this is {__version__}; {fix}): "
                                f"{exc}") from exc
        tagger.labels = tuple(meta.get("labels", LABELS))
        tagger.history = [EpochRecord.from_dict(r) for r in meta.get("history", [])]
        tagger.train_seconds = meta.get("train_seconds")
        tagger.provenance = meta.get("provenance", {})
        return tagger


def _has_cuda() -> bool:
    import torch  # only asked for torch families that were saved with device "cuda"

    return torch.cuda.is_available()


def write_meta(directory: Path, meta: dict) -> None:
    """Write ``kner.json`` beside its final name, then rename it there, so a reader never sees half."""
    partial = directory / f".{META_FILE}.partial"
    partial.write_text(json.dumps(meta, ensure_ascii=False, indent=2), encoding="utf-8")
    partial.replace(directory / META_FILE)


def read_meta(directory: str | Path) -> dict:
    directory = Path(directory)
    path = directory / META_FILE
    if not directory.is_dir():
        raise ModelDirError(f"{directory} is not a directory; pass a folder written by 'kner train' or Tagger.save")
    if not path.is_file():
        raise ModelDirError(f"{directory} has no {META_FILE}, so it is not a kner model directory (train one with 'kner train')")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelDirError(f"{path} is damaged: {exc}") from exc
    if not isinstance(meta, dict) or "family" not in meta:
        raise ModelDirError(f"{path} names no model family; the directory is damaged")
    return meta
