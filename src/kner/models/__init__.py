"""The registry of model families: name -> :class:`~kner.models.base.Tagger` subclass.

Families are imported on first use, so the CRF works without torch installed; a family whose
optional packages are missing fails with :class:`~kner.extras.MissingExtraError` naming the extra.
"""
from __future__ import annotations

import importlib
from pathlib import Path

from ..extras import MissingExtraError, needs_extra
from .base import EpochRecord, ModelDirError, Tagger, read_meta
from .selection import refit

_FAMILIES = {
    "crf": "kner.models.crf:CRFTagger",
    "bilstm-crf": "kner.models.bilstm_crf:BiLSTMCRFTagger",
    "bert": "kner.models.bert:BertTagger",
    "sllm": "kner.models.sllm:SLLMTagger",
    "ensemble": "kner.models.ensemble:EnsembleTagger",
}


def names() -> list[str]:
    return list(_FAMILIES)


def get(name: str) -> type[Tagger]:
    """The tagger class registered as ``name``; :class:`MissingExtraError` when it needs an extra
    that is not installed."""
    if name not in _FAMILIES:
        raise KeyError(f"unknown model family {name!r}; choose one of {', '.join(_FAMILIES)}")
    module, _, cls = _FAMILIES[name].partition(":")
    with needs_extra(name):
        return getattr(importlib.import_module(module), cls)


def load(directory: str | Path, **overrides) -> Tagger:
    """A ready tagger from a directory written by :meth:`Tagger.save`. ``overrides`` replace
    saved settings that only affect how it runs, e.g. ``precision="bf16"`` or ``device="cpu"``."""
    meta = read_meta(directory)
    family = meta["family"]
    if family not in _FAMILIES:
        raise ModelDirError(f"{directory} holds a {family!r} model, which this kner does not know ({', '.join(_FAMILIES)})")
    return get(family).from_meta(Path(directory), meta, overrides)


__all__ = ["EpochRecord", "MissingExtraError", "ModelDirError", "Tagger", "get", "load", "names", "read_meta", "refit"]
