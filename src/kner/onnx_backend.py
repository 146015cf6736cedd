"""ONNX for the BERT family: export a run's network with ``torch.onnx`` and run it in onnxruntime.

Only the network moves: :func:`load_onnx` gives an ordinary :class:`~kner.models.bert.BertTagger`
whose logits step is an onnxruntime session (:meth:`~kner.models.bert.BertTagger.use_network`),
so windowing, batching and span decoding are the very same code as under torch and both give
the same spans.
"""
from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from .models import ModelDirError, load, read_meta
from .models.bert import BertTagger, length_sorted_batches

ONNX_SUBDIR = "onnx"
ONNX_FILE = "model.onnx"
INPUTS = ("input_ids", "attention_mask")
OPSET = 17
MAX_ABS_DIFF = 1e-3  # float32 logits from two runtimes agree far closer than this; more means a broken graph
# Two batches of different shapes (with padding): one exported, one checked, so neither axis is frozen.
TRACE_TEXTS = ["이순신 장군은 조선 시대의 명장이다.", "서울시청"]
CHECK_TEXTS = ["김철수는 2019년 삼성전자에 입사했다. 그는 부산에서 태어났다.", "오후 3시", "사과 5개를 샀다."]


class _LogitsOnly(torch.nn.Module):
    """The exported graph's signature: ids and mask in, (batch, seq, labels) logits out."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits


def _sample_batch(tagger: BertTagger, texts: Sequence[str]) -> dict[str, np.ndarray]:
    encoded = tagger.encoder.encode(texts)
    seqs = [tagger.encoder.window_ids(enc, w) for enc in encoded for w in range(len(enc.wins))]
    _, batch = next(length_sorted_batches(seqs, len(seqs), tagger.encoder.pad_id))
    return batch


def _bert_dir(run_dir: Path) -> None:
    family = read_meta(run_dir)["family"]
    if family != BertTagger.family:
        raise ModelDirError(f"{run_dir} holds a {family} model; ONNX export covers the {BertTagger.family} family only")


def session(path: str | Path, num_threads: int = 0):
    """An onnxruntime CPU session; ``num_threads`` 0 keeps onnxruntime's default (one per core)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if num_threads > 0:
        options.intra_op_num_threads = num_threads
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def export_onnx(run_dir: str | Path, out: str | Path | None = None, opset: int = OPSET) -> Path:
    """Write ``OUT/model.onnx`` (default ``RUN_DIR/onnx``) with dynamic batch and sequence axes,
    check it against torch on a batch of another shape, and record the check in ``OUT/onnx.json``."""
    run_dir = Path(run_dir)
    _bert_dir(run_dir)
    out = Path(out) if out is not None else run_dir / ONNX_SUBDIR
    tagger = load(run_dir)
    # eval() on the wrapper too: a fresh Module is in training mode, and exporters restore that mode
    # recursively afterwards (dropout on in the torch model used for the check).
    model = _LogitsOnly(tagger.model.to("cpu")).eval()
    out.mkdir(parents=True, exist_ok=True)
    path = out / ONNX_FILE
    trace = _sample_batch(tagger, TRACE_TEXTS)
    batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence")
    with warnings.catch_warnings():
        # The exporter's notices about axis renaming and graph rewrites are covered by the check below.
        warnings.filterwarnings("ignore", module=r"torch\.onnx\.")
        warnings.simplefilter("ignore", FutureWarning)
        torch.onnx.export(model, tuple(torch.from_numpy(trace[k]) for k in INPUTS), str(path), dynamo=True,
                          input_names=list(INPUTS), output_names=["logits"], opset_version=opset,
                          dynamic_shapes={k: {0: batch, 1: sequence} for k in INPUTS},
                          external_data=False,  # one self-contained file (BERT-base is far below ONNX's 2 GB cap)
                          verbose=False)  # the dynamo exporter otherwise prints its progress on stdout
    check = _sample_batch(tagger, CHECK_TEXTS)
    with torch.inference_mode():
        want = model(*(torch.from_numpy(check[k]) for k in INPUTS)).numpy()
    got = session(path).run(["logits"], {k: check[k] for k in INPUTS})[0]
    diff = float(np.abs(got - want).max())
    if not diff <= MAX_ABS_DIFF:
        raise RuntimeError(f"the exported graph's logits differ from torch's by {diff:.3g} (> {MAX_ABS_DIFF}); "
                           f"the export in {path} is not usable")
    (out / "onnx.json").write_text(json.dumps({
        "opset": opset, "inputs": list(INPUTS), "outputs": ["logits"], "check_max_abs_diff": diff,
        "torch_version": torch.__version__, "exported_from": str(run_dir.resolve()),
    }, indent=2), encoding="utf-8")
    return path


def load_onnx(run_dir: str | Path, onnx_path: str | Path | None = None, **overrides) -> BertTagger:
    """The run's tagger with its network in onnxruntime (``RUN_DIR/onnx/model.onnx`` unless given);
    ``overrides`` replace saved runtime settings, as for :func:`kner.load`."""
    run_dir = Path(run_dir)
    _bert_dir(run_dir)
    path = Path(onnx_path) if onnx_path is not None else run_dir / ONNX_SUBDIR / ONNX_FILE
    if not path.is_file():
        raise ModelDirError(f"{path} does not exist; write it with 'kner export-onnx {run_dir}'")
    tagger = load(run_dir, **overrides)
    runner = session(path, tagger.config.num_threads)
    tagger.use_network("onnx", lambda batch: runner.run(["logits"], {k: batch[k] for k in INPUTS})[0])
    return tagger
