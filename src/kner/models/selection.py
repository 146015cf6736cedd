"""Keeping the best epoch: score each epoch on held-out examples, keep its weights, stop early.

Written once for every epoch-trained family. The held-out examples are what the caller gave
``fit``: the validation split carved from train (:func:`kner.data.split_validation`), never
the dev set the model is then reported on, unless a caller asked for dev by name.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from ..scoring import score
from ..types import Example, Span
from .base import EpochRecord, Tagger

log = logging.getLogger("kner")


class EpochSelector:
    """Appends one :class:`EpochRecord` per epoch to ``tagger.history`` and keeps a snapshot of
    the weights of the epoch with the best held-out F1 (the last epoch without held-out data)."""

    def __init__(self, tagger: Tagger, valid: Sequence[Example] | None, patience: int | None = None) -> None:
        self.tagger, self.patience = tagger, patience
        self.examples = {"valid": [ex for ex in valid or [] if ex.text.strip()],
                         "monitor": [ex for ex in getattr(tagger, "monitor", None) or [] if ex.text.strip()]}
        self.best_f1, self.best_state, self.bad_epochs = -1.0, None, 0
        tagger.history = []

    @property
    def valid(self) -> list[Example]:
        return self.examples["valid"]

    def texts(self, role: str) -> list[str]:
        """The texts of the held-out (``valid``) or monitored (``monitor``) examples."""
        return [ex.text for ex in self.examples[role]]

    def end_epoch(self, epoch: int, seconds: float, train_loss: float,
                  predict: Callable[[str], list[list[Span]]], snapshot: Callable[[], dict]) -> EpochRecord:
        """Score ``predict(role)`` (spans for ``texts(role)``) and keep ``snapshot()`` if the held-out
        F1 is the best so far. The monitored examples (``tagger.monitor``, e.g. dev for the benchmark's
        selection-effect figure) are scored for the record only and never choose anything."""
        start = time.perf_counter()
        f1 = score(self.valid, predict("valid")).f1 if self.valid else None
        eval_seconds = time.perf_counter() - start
        monitor = self.examples["monitor"]
        dev_f1 = score(monitor, predict("monitor")).f1 if monitor else None
        record = EpochRecord(epoch, seconds, train_loss, f1, len(self.valid) or None, eval_seconds, dev_f1)
        self.tagger.history.append(record)
        log.info("%s epoch %d: loss %.4f, validation F1 %s, %.1f s (+%.1f s scoring)%s", self.tagger.family, epoch,
                 train_loss, "-" if f1 is None else f"{f1:.4f}", seconds, eval_seconds,
                 "" if dev_f1 is None else f"; monitored dev F1 {dev_f1:.4f} (not used)")
        if f1 is None or f1 > self.best_f1:
            self.best_f1, self.bad_epochs, self.best_state = -1.0 if f1 is None else f1, 0, snapshot()
        else:
            self.bad_epochs += 1
        return record

    @property
    def should_stop(self) -> bool:
        """True once ``patience`` epochs in a row brought no better held-out F1."""
        return bool(self.valid) and self.patience is not None and self.bad_epochs >= self.patience

    def state(self) -> dict:
        """What a resumed run needs to go on choosing as this one would have."""
        return {"best_f1": self.best_f1, "best_state": self.best_state, "bad_epochs": self.bad_epochs}

    def restore(self, state: dict, history: list[EpochRecord]) -> None:
        self.best_f1, self.best_state, self.bad_epochs = state["best_f1"], state["best_state"], state["bad_epochs"]
        self.tagger.history = list(history)


def total_seconds(history: Sequence[EpochRecord]) -> float:
    """Wall time of training with its per-epoch scoring."""
    return sum(r.seconds + r.eval_seconds for r in history)
