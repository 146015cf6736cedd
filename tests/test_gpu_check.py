"""The GPU check's path on a CPU (scripts/gpu_check.sh --cpu-smoke), with the packages the GPU
machine lacks made unimportable, and kner's behaviour without Kiwi there."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

import kner
from conftest import REPO
from builders import sllm as sllm_builder
from kner.gpu_check import BILSTM_WITHOUT_KIWI, SMOKE, RTX3090_BERT_EPOCH_S, carry_sllm, run, write_summary
from kner.models.bilstm_crf import BiLSTMCRFTagger

ABSENT = ("kiwipiepy", "kiwipiepy_model", "pycrfsuite", "seqeval", "fastapi")  # not on the GPU machine
STAGES = ["gpu_tests", "sllm_trained", "bert", "sllm_gemma-3-270m", "bilstm_crf", "sllm_qwen2.5-0.5b"]


@pytest.mark.slow
def test_cpu_smoke_runs_every_stage_without_the_absent_packages_and_writes_both_summaries(tmp_path, klue_dir):
    absent = tmp_path / "absent"
    for name in ABSENT:  # a package that raises on import, found before the installed one
        (absent / name).mkdir(parents=True)
        (absent / name / "__init__.py").write_text(f"raise ImportError('{name} is not on the GPU machine')\n")
    out = tmp_path / "out"
    env = {**os.environ, "OUT": str(out), "KNER_DATA": str(klue_dir), "PYTHONPATH": str(absent), "PYTHON": sys.executable}
    proc = subprocess.run([str(REPO / "scripts/gpu_check.sh"), "--cpu-smoke"], env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["smoke"] is True and summary["device"].startswith("cpu: ") and summary["torch"] == torch.__version__
    assert {"cuda", "transformers", "peft", "accelerate", "tokenizers", "python", "total_seconds"} <= summary.keys()
    stages = summary["stages"]
    assert list(stages) == STAGES
    assert all(s["ok"] and s["seconds"] > 0 and s["peak_gpu_memory_gb"] is None for s in stages.values())
    tests = stages["gpu_tests"]  # collected, and skipped for want of a GPU
    assert tests["tests"] >= 8 and tests["skipped"] == tests["tests"] and tests["passed"] == tests["failures"] == 0
    bert = stages["bert"]
    assert bert["train_sentences"] == SMOKE.train_limit and bert["steps"] == -(-bert["windows"] // 32) >= 1
    assert bert["precision"] == "fp32" and bert["rtx3090_epoch_seconds"] == RTX3090_BERT_EPOCH_S
    assert bert["speedup_vs_rtx3090"] == pytest.approx(RTX3090_BERT_EPOCH_S / bert["epoch_seconds"], rel=0.05)
    for name in ("sllm_gemma-3-270m", "sllm_qwen2.5-0.5b"):
        sllm = stages[name]
        assert sllm["lora_steps"] == SMOKE.sllm_steps and sllm["decode_sentences"] == SMOKE.decode_sentences
        assert sllm["parse_failures"] == 0 and sllm["generated_tokens_per_s"] > 0 and sllm["train_tokens_per_s"] > 0
        # fp32 on a CPU: one-pass verification writes per-token decoding's spans, in no more passes
        assert sllm["same_spans_as_per_token"] == 1.0
        assert 0 < sllm["passes_per_sentence"] <= sllm["per_token_passes_per_sentence"]
        assert sllm["verification_speedup"] == pytest.approx(
            sllm["decode_sentences_per_s"] / sllm["per_token_sentences_per_s"], rel=0.02)
    trained = stages["sllm_trained"]  # each decoding at its faster probed batch size, over the same sentences
    assert trained["decode_sentences"] == SMOKE.trained_sentences and trained["parse_failures"] == 0
    assert {trained["per_token_batch"], trained["decode_batch"]} <= set(SMOKE.trained_batch_sizes)
    assert all(set(probe) == {str(b) for b in SMOKE.trained_batch_sizes} for probe in trained["probe_seconds"].values())
    assert trained["same_spans_as_per_token"] == 1.0 and trained["f1"] == trained["one_pass_f1"]
    # Passes per sentence depend on the batch (its longest output sets its passes), and each decoding's batch
    # is chosen by timing, which a loaded machine changes: only at the same batch must one-pass need no more.
    assert trained["passes_per_sentence"] > 0
    if trained["per_token_batch"] == trained["decode_batch"]:
        assert trained["passes_per_sentence"] <= trained["per_token_passes_per_sentence"]
    assert stages["bilstm_crf"]["train_sentences"] == SMOKE.train_limit and stages["bilstm_crf"]["epoch_seconds"] > 0

    markdown = (out / "summary.md").read_text(encoding="utf-8")
    assert "CPU smoke" in markdown and summary["device"] in markdown
    assert all(f"| {name} | yes |" in markdown for name in STAGES)
    assert "skipped" in (out / "gpu_tests.log").read_text(encoding="utf-8")


def test_prepare_carries_a_full_weight_sllm_in_bf16_and_refuses_a_lora_adapter(tmp_path, request, overfit_examples):
    full = sllm_builder.make(tmp_path, request, epochs=1).fit(overfit_examples)
    full.save(tmp_path / "full")
    carry_sllm(tmp_path / "full", tmp_path / "carried")
    carried = kner.load(tmp_path / "carried")
    expected = {name: p.detach().to(torch.bfloat16).float() for name, p in full.model.named_parameters()}
    assert expected.keys() == dict(carried.model.named_parameters()).keys()
    assert all(torch.equal(expected[name], p) for name, p in carried.model.named_parameters())
    size = {name: (tmp_path / name / "model.safetensors").stat().st_size for name in ("full", "carried")}
    assert size["carried"] < 0.6 * size["full"]

    sllm_builder.make(tmp_path, request, epochs=1, lora=True).fit(overfit_examples).save(tmp_path / "lora")
    with pytest.raises(SystemExit, match="is not a full-weight sLLM; train one with 'kner train sllm --no-lora'"):
        carry_sllm(tmp_path / "lora", tmp_path / "refused")
    assert not (tmp_path / "refused").exists()


def test_a_failed_stage_is_one_table_row_with_its_error(tmp_path):
    summary = {"smoke": False, "device": "NVIDIA H200", "gpu_memory_gb": 139.8, "torch": "2.11", "cuda": "12.8",
               "transformers": "5.17",
               "peft": "0.17", "python": "3.12", "total_seconds": 9.0, "stages": {
                   "bert": {"ok": False, "error": "RuntimeError: a | b\nc", "seconds": 1.0, "peak_gpu_memory_gb": 2.5}}}
    write_summary(summary, tmp_path)
    assert "NVIDIA H200 (139.8 GB); torch 2.11, CUDA 12.8" in (tmp_path / "summary.md").read_text(encoding="utf-8")
    assert "| bert | NO | 1.0 | 2.5 | RuntimeError: a / b c |" in (tmp_path / "summary.md").read_text(encoding="utf-8")
    assert json.loads((tmp_path / "summary.json").read_text(encoding="utf-8")) == summary


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_the_full_check_refuses_a_machine_without_a_gpu(tmp_path):
    (tmp_path / "prepared.json").write_text(json.dumps({"smoke": False}))
    with pytest.raises(SystemExit, match="--cpu-smoke"):
        run(tmp_path, tmp_path / "out")


def test_stages_runs_only_the_named_stages_and_refuses_an_unknown_name(tmp_path, klue_dir):
    (tmp_path / "prepared.json").write_text(json.dumps({"smoke": True}))
    (tmp_path / "klue").symlink_to(klue_dir)
    with pytest.raises(SystemExit, match="no stage bilstm; the stages are gpu_tests, bert, "):
        run(tmp_path, tmp_path / "out", ["bilstm"])
    assert run(tmp_path, tmp_path / "out", ["bilstm_crf"]) == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text(encoding="utf-8"))
    assert list(summary["stages"]) == ["bilstm_crf"] and summary["stages"]["bilstm_crf"]["ok"]


def test_without_kiwi_a_kiwi_free_model_loads_and_kiwi_features_name_the_fix(tmp_path, overfit_examples, monkeypatch):
    from kner import morphology

    tagger = BiLSTMCRFTagger(**BILSTM_WITHOUT_KIWI, **SMOKE.bilstm, max_epochs=1).fit(overfit_examples)
    tagger.save(tmp_path / "model")
    texts = [ex.text for ex in overfit_examples]
    for name in ("kiwipiepy", "kiwipiepy_model"):
        monkeypatch.setitem(sys.modules, name, None)  # import now raises ImportError
    assert kner.load(tmp_path / "model").predict(texts) == tagger.predict(texts)
    with pytest.raises(ImportError, match="--kiwi-dim 0 --kiwi-vectors 0"):
        morphology.kiwi.__wrapped__()  # the uncached call, so the shared Kiwi stays as it is
