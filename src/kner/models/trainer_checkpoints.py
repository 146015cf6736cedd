"""Resumable Hugging Face Trainer runs (bert, sllm).

With ``checkpoint_dir`` set, the Trainer saves a checkpoint after every epoch (weights, optimizer,
scheduler, random states; only the newest is kept) and restores it with ``resume_from_checkpoint``.
What the Trainer does not know is kner's epoch choice, so each checkpoint also carries the
:class:`~kner.models.selection.EpochSelector`'s state and the epoch history: a resumed run goes on
choosing as the interrupted one would have.
"""
from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import torch
from transformers import TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, get_last_checkpoint

from .base import EpochRecord, Tagger
from .selection import EpochSelector, check_resumable, learned_config, resuming

log = logging.getLogger("kner")

SELECTOR_FILE = "kner_selector.pt"


@contextmanager
def trainer_settings(tagger: Tagger) -> Iterator[dict]:
    """TrainingArguments for saving: every epoch into ``checkpoint_dir``, else nothing (into a
    temporary folder, as the Trainer needs an ``output_dir`` even when it saves nothing)."""
    folder = tagger.config.checkpoint_dir
    if folder:
        yield {"output_dir": folder, "save_strategy": "epoch", "save_total_limit": 1}
        return
    with tempfile.TemporaryDirectory(prefix=f"kner-{tagger.family}-") as scratch:
        yield {"output_dir": scratch, "save_strategy": "no"}


def resume(tagger: Tagger, selector: EpochSelector) -> tuple[str | None, bool]:
    """With ``resume`` set: restore ``selector`` from the newest checkpoint in ``checkpoint_dir``.
    Returns that checkpoint for ``Trainer.train(resume_from_checkpoint=...)`` (None when there is
    none) and whether the run had already finished there (its epochs, a refit's count or the time
    budget), so that nothing is left to train."""
    cfg = tagger.config
    if not resuming(cfg):
        return None, False
    last = get_last_checkpoint(cfg.checkpoint_dir) if Path(cfg.checkpoint_dir).is_dir() else None
    if last is None:
        return None, False
    path = Path(last) / SELECTOR_FILE
    if not path.is_file():  # the run stopped between the Trainer's save and ours
        raise ValueError(f"{last} has no {SELECTOR_FILE}, so it cannot be resumed; delete {last} to start over")
    blob = torch.load(path, weights_only=True)
    check_resumable(tagger, blob["config"], path)
    selector.restore(blob, [EpochRecord.from_dict(r) for r in blob["history"]])
    log.info("%s resumed from %s after epoch %d", tagger.family, last, len(tagger.history))
    return last, blob["finished"]


class SaveSelector(TrainerCallback):
    """Writes the selector's state into each checkpoint the Trainer has just saved (rank 0 holds it)."""

    def __init__(self, selector: EpochSelector) -> None:
        self.selector = selector

    def on_save(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        tagger = self.selector.tagger
        path = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}" / SELECTOR_FILE
        blob = {**self.selector.state(), "config": learned_config(tagger), "finished": control.should_training_stop,
                "history": [asdict(r) for r in tagger.history]}
        torch.save(blob, path.with_suffix(".tmp"))
        os.replace(path.with_suffix(".tmp"), path)  # atomic: never a half-written state
