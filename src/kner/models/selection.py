"""Keeping the best epoch: score each epoch on held-out examples, keep its weights, stop early.

Written once for every epoch-trained family. The held-out examples are what the caller gave
``fit``: the validation split carved from train (:func:`kner.data.split_validation`), never
the dev set the model is then reported on, unless a caller asked for dev by name.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

from ..scoring import score
from ..types import Example, Span
from .base import EpochRecord, Tagger

log = logging.getLogger("kner")


class EpochSelector:
    """Appends one :class:`EpochRecord` per epoch to ``tagger.history`` and keeps a snapshot of
    the weights of the epoch with the best held-out F1 (the last epoch without held-out data).
    A refit (``tagger.refit_epochs``) stops after that many epochs."""

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
        """True once ``patience`` epochs in a row brought no better held-out F1, or once a refit
        has trained the epochs it was given."""
        if self.tagger.refit_epochs is not None and len(self.tagger.history) >= self.tagger.refit_epochs:
            return True
        return bool(self.valid) and self.patience is not None and self.bad_epochs >= self.patience

    def state(self) -> dict:
        """What a resumed run needs to go on choosing as this one would have."""
        return {"best_f1": self.best_f1, "best_state": self.best_state, "bad_epochs": self.bad_epochs}

    def restore(self, state: dict, history: list[EpochRecord]) -> None:
        self.best_f1, self.best_state, self.bad_epochs = state["best_f1"], state["best_state"], state["bad_epochs"]
        self.tagger.history = list(history)


def learned_config(tagger: Tagger) -> dict:
    """The settings a resumed run must share with the interrupted one (runtime ones may differ)."""
    skip = {*tagger.runtime_settings, "checkpoint_dir", "resume", "feature_cache"}
    return {k: v for k, v in asdict(tagger.config).items() if k not in skip}


def resuming(config) -> bool:
    """``config.resume``, refused in one line when there is no ``checkpoint_dir`` to resume from."""
    if config.resume and not config.checkpoint_dir:
        raise ValueError("resume=True needs checkpoint_dir (the folder the interrupted run wrote)")
    return config.resume


def check_resumable(tagger: Tagger, saved: dict, path: Path) -> None:
    """Refuse a checkpoint whose ``saved`` :func:`learned_config` differs from ``tagger``'s. A setting
    newer than the checkpoint ran at its default then (``former_defaults`` where that changed)."""
    mine, default = learned_config(tagger), asdict(type(tagger.config)()) | tagger.former_defaults
    diff = sorted(k for k in mine if saved.get(k, default[k]) != mine[k])
    if diff:
        raise ValueError(f"{path} was written with other settings ({', '.join(diff)}); "
                         "resume with the same config or use a fresh checkpoint_dir")


def total_seconds(history: Sequence[EpochRecord]) -> float:
    """Wall time of training with its per-epoch scoring."""
    return sum(r.seconds + r.eval_seconds for r in history)


def refit(tagger: Tagger, train: Sequence[Example], valid: Sequence[Example]) -> Tagger:
    """A new tagger trained from scratch on ``train`` and ``valid`` together, repeating what
    ``tagger.fit(train, valid)`` chose on ``valid``: its best epoch count, and the tuned settings fit
    wrote into its config (such as bilstm-crf's ``recall_bias``). The learning-rate schedule keeps
    its length, so the refit follows the chosen run's course with 1/(1 - fraction) more steps an
    epoch, and keeps its last epoch. Nothing is chosen on data it trains on; the model has seen
    ``valid``, though, so it cannot be scored there or join an ensemble (``provenance``)."""
    if tagger.provenance.get("selection", {}).get("on") == "dev":
        raise ValueError("this run chose its epoch on dev; a refit would train on the sentences it is scored on. "
                         "Choose on validation (kner train's default) to refit")
    scored = [r for r in tagger.history if r.valid_f1 is not None]
    if not tagger.epoch_trained or not scored or not valid:
        raise ValueError(f"a {tagger.family} run chose no epoch on validation, so there is nothing to refit; "
                         "refit a bilstm-crf, bert or sllm run trained with a validation split")
    best = max(scored, key=lambda r: r.valid_f1)  # the first of equals, as EpochSelector keeps
    config = asdict(tagger.config)
    if config.get("checkpoint_dir"):  # its own checkpoints, so --resume can resume either run
        config["checkpoint_dir"] = str(Path(config["checkpoint_dir"]) / "refit")
    again = type(tagger)(**config)
    again.refit_epochs = best.epoch
    log.info("%s refit: %d epochs (chosen on %d validation sentences, F1 %.4f) on %d + %d sentences",
             tagger.family, best.epoch, len(valid), best.valid_f1, len(train), len(valid))
    again.fit([*train, *valid], None)
    chosen = {"epochs": best.epoch, "validation_f1": best.valid_f1, "n_valid": len(valid),
              "history": [asdict(r) for r in tagger.history]}
    selection = {**tagger.provenance.get("selection", {}), "trained_on_validation": True,
                 "n_train": len(train) + len(valid)}
    selection["note"] = (f"epochs and settings chosen on {len(valid):,} validation sentences held out of train, "
                         f"then trained again on train and validation together ({len(train) + len(valid):,} "
                         "sentences); dev not used for selection")
    again.provenance = {**tagger.provenance, "selection": selection, "refit": chosen}
    return again
