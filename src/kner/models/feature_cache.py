"""A folder that keeps a frozen encoder's features of training texts between runs.

A frozen encoder gives a text the same features in every run, and computing them is much of a run's
time on a CPU (docs/experiments.md), so runs over the same encoder and training texts that differ in
their seed or the network's settings, and a ``--resume``, can read them instead. Hand-written because
the features are ragged per-character float16 tensors that ``datasets``' cache would store as nested
lists: here each write is one tensor file, read back memory-mapped.

A text's features are found by the text and by a key over everything they depend on: the encoder's
source files (its weights), its vocabulary as trimmed to the training texts, the layers read,
normalisation, echo, pretokenisation, the window, the precision and the device type.
"""
from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from .hf_common import local_only

log = logging.getLogger(__name__)
FORMAT = 3  # raised when what is stored, or how it is keyed, changes


def source_digest(name_or_path: str) -> str:
    """SHA-256 over a model folder's files (names and contents), or over the hub copy's snapshot folder;
    hashed again only when a file's size or time changes."""
    folder = Path(name_or_path)
    if not folder.is_dir():
        from huggingface_hub import snapshot_download

        folder = Path(snapshot_download(str(name_or_path), local_files_only=local_only(name_or_path)))
    files = tuple((str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns)
                  for p in sorted(folder.rglob("*")) if p.is_file())
    return _digest(folder, files)


@functools.cache
def _digest(folder: Path, files: tuple) -> str:
    digest = hashlib.sha256()
    for name, *_ in files:
        digest.update(name.encode())
        with (folder / name).open("rb") as f:
            digest.update(hashlib.file_digest(f, "sha256").digest())
    return digest.hexdigest()


def key(source: str, settings: dict) -> str:
    """The folder name for features of ``source`` read with ``settings``."""
    text = json.dumps({"format": FORMAT, "source": source_digest(source), **settings}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def cached(folder: Path, texts: Sequence[str],
           compute: Callable[[list[str]], list[torch.Tensor]]) -> list[torch.Tensor]:
    """``compute(texts)``, computing only the texts ``folder`` lacks and adding them to it as one more file."""
    found: dict[str, torch.Tensor] = {}
    for part in sorted(folder.glob("*.pt")):
        stored = torch.load(part, mmap=True, weights_only=True)
        found.update(zip(stored["texts"], stored["features"].split(stored["lengths"].tolist())))
    hits = sum(t in found for t in texts)
    log.info("encoder features: %d of %d texts from %s", hits, len(texts), folder)
    missing = list(dict.fromkeys(t for t in texts if t not in found))
    if missing:
        new = compute(missing)
        folder.mkdir(parents=True, exist_ok=True)
        stored = {"texts": missing, "lengths": torch.tensor([len(f) for f in new]), "features": torch.cat(new)}
        # Written whole, then renamed into place: an interrupted run leaves no half file to be read later.
        name = f"{len(list(folder.glob('*.pt'))):05d}-{os.getpid()}.pt"  # the pid keeps concurrent runs apart
        tmp = folder / f"{name}.tmp"
        try:
            torch.save(stored, tmp)
            os.replace(tmp, folder / name)
        except BaseException:  # Ctrl-C included: a partial file of several GB is not left behind
            tmp.unlink(missing_ok=True)
            raise
        found.update(zip(missing, new))
    return [found[t] for t in texts]
