"""ONNX backend for the BERT family: the exported graph keeps dynamic axes, and onnxruntime gives
the same spans as torch for every text, through the same encode/decode code."""
from __future__ import annotations

import dataclasses
import json

import onnx
import pytest
from builders import bert as bert_builder
from conftest import ODD_TEXTS, OVERFIT
from fastapi.testclient import TestClient

from kner import load
from kner.bert_speed import compare_backends
from kner.cli import main
from kner.data import load_split
from kner.models import ModelDirError
from kner.models.bert import BertTagger
from kner.models.crf import CRFTagger
from kner.onnx_backend import export_onnx, load_onnx
from kner.serve import create_app, load_models

pytestmark = pytest.mark.slow  # trains neural models or starts servers: `pytest -m "not slow"` skips them


@pytest.fixture(scope="module", params=["wordpiece", "sentencepiece"])
def exported_run(request, tmp_path_factory):
    """A tiny BERT (WordPiece) or XLM-R-style (SentencePiece) tagger fitted on OVERFIT, saved and exported."""
    root = tmp_path_factory.mktemp(f"onnx-{request.param}")
    tagger = bert_builder.make(root, request, kind=request.param).fit(OVERFIT)
    run = tagger.save(root / f"bert-{request.param}")
    export_onnx(run)
    return run


@pytest.fixture(scope="module")
def texts(klue_dir):
    return [ex.text for ex in OVERFIT] + ODD_TEXTS + [ex.text for ex in load_split("dev", klue_dir, limit=40)]


def test_export_keeps_batch_and_sequence_dynamic_and_records_its_check(exported_run):
    graph = onnx.load(str(exported_run / "onnx" / "model.onnx")).graph
    for value in [*graph.input, *graph.output]:
        dims = value.type.tensor_type.shape.dim
        assert [d.dim_param for d in dims[:2]] == ["batch", "sequence"], value.name
    assert [i.name for i in graph.input] == ["input_ids", "attention_mask"]
    record = json.loads((exported_run / "onnx" / "onnx.json").read_text())
    assert record["check_max_abs_diff"] < 1e-3


def test_onnx_predicts_the_same_spans_as_torch_in_fp32_for_every_text(exported_run, texts):
    torch_spans = load(exported_run, precision="fp32").predict(texts)
    onnx_spans = load_onnx(exported_run).predict(texts)
    assert onnx_spans == torch_spans
    assert onnx_spans[: len(OVERFIT)] == [sorted(ex.spans) for ex in OVERFIT]  # a trained model, not a blank one


def test_compare_backends_reports_both_timings_and_identical_spans_in_fp32(exported_run, texts):
    result = compare_backends(exported_run, texts, repeats=2, precision="fp32")
    assert result["torch_precision"] == "fp32" and result["identical_spans"] and result["texts_with_different_spans"] == 0
    assert len(result["torch_seconds"]) == len(result["onnx_seconds"]) == 2 and result["n_texts"] == len(texts)
    assert result["onnx_speedup"] == result["torch_median_seconds"] / result["onnx_median_seconds"]


def test_onnx_is_a_runtime_of_the_bert_tagger_that_training_replaces(exported_run, tmp_path):
    tagger = load_onnx(exported_run)
    assert type(tagger) is BertTagger and tagger.backend == "onnx"
    with pytest.raises(RuntimeError, match="runs in onnx without its torch weights"):
        tagger.save(tmp_path / "copy")
    tagger.config = dataclasses.replace(tagger.config, epochs=1)
    tagger.fit(OVERFIT[:2])  # a fresh torch network: training runs in torch, and so does predict after it
    assert tagger.backend == "torch" and tagger.save(tmp_path / "copy").is_dir()


def test_cli_exports_to_a_chosen_folder(exported_run, tmp_path, capsys):
    main(["export-onnx", str(exported_run), "--out", str(tmp_path / "elsewhere")])
    path = tmp_path / "elsewhere" / "model.onnx"
    assert capsys.readouterr().out == f"wrote {path} (checked against torch: {path.with_name('onnx.json')})\n"
    assert load_onnx(exported_run, tmp_path / "elsewhere" / "model.onnx").predict([OVERFIT[0].text]) == [
        sorted(OVERFIT[0].spans)]


def test_serve_runs_bert_through_onnxruntime_when_asked(exported_run):
    (onnx_model,), (default,) = load_models([exported_run], backend="onnx"), load_models([exported_run])
    assert (onnx_model.tagger.backend, default.tagger.backend) == ("onnx", "torch")
    with TestClient(create_app([onnx_model])) as http:
        assert http.get("/models").json()["models"][0]["backend"] == "onnx"
        spans = http.post("/predict", json={"text": OVERFIT[3].text}).json()["models"][0]["results"][0]["spans"]
    assert [(s["start"], s["end"], s["label"]) for s in spans] == [(s.start, s.end, s.label) for s in OVERFIT[3].spans]


def test_non_bert_runs_and_missing_exports_are_refused_with_the_fix(tmp_path, request):
    crf = CRFTagger(max_iterations=5).fit(OVERFIT).save(tmp_path / "crf")
    with pytest.raises(ModelDirError, match="crf model; ONNX export covers the bert family"):
        export_onnx(crf)
    with pytest.raises(SystemExit, match="kner export-onnx: .*crf model"):
        main(["export-onnx", str(crf)])
    bert = bert_builder.make(tmp_path, request, epochs=1).fit(OVERFIT[:1]).save(tmp_path / "bert")
    with pytest.raises(ModelDirError, match="kner export-onnx"):
        load_onnx(bert)
    with pytest.raises(ModelDirError, match="kner export-onnx"):
        load_models([bert], backend="onnx")
