"""`kner benchmark` end to end on a tiny CRF: figures consistent with the model it saved."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

import kner
from kner.benchmark import BenchmarkError, _limit, model_bytes, peak_rss_mb, run_benchmark
from kner.data import load_split
from kner.models.crf import CRFTagger
from kner.scoring import score

pytestmark = pytest.mark.slow  # trains neural models or starts servers: `pytest -m "not slow"` skips them

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TINY = dict(train_limit=200, dev_limit=50, overrides={"crf": {"max_iterations": 20}}, repeats=1, latency_samples=5)


@pytest.fixture(scope="module")
def bench(tmp_path_factory, klue_dir):
    out = tmp_path_factory.mktemp("bench")
    result = run_benchmark(["crf"], str(klue_dir), out, **TINY)
    return out, result


def test_report_json_is_what_run_benchmark_returns(bench):
    out, result = bench
    assert json.loads((out / "report.json").read_text(encoding="utf-8")) == result
    assert result["settings"]["train_limit"] == 200 and result["machine"]["logical_cores"] >= 1


def test_scores_equal_the_scorer_on_the_reloaded_models_predictions(bench, klue_dir):
    out, result = bench
    (m,) = result["models"]
    dev = load_split("dev", klue_dir, limit=50)
    expected = score(dev, kner.load(out / "models" / "crf").predict([ex.text for ex in dev])).to_dict()
    for key in ("f1", "precision", "recall", "klue_entity_macro_f1", "klue_char_macro_f1", "per_type"):
        assert m[key] == expected[key], key
    saved = json.loads((out / "models" / "crf" / "kner.json").read_text(encoding="utf-8"))
    assert saved["metrics"]["f1"] == m["f1"] and saved["metrics"]["n_dev"] == 50


def test_the_model_folder_records_the_measured_speed_for_its_card(bench):
    out, result = bench
    (m,) = result["models"]
    saved = json.loads((out / "models" / "crf" / "kner.json").read_text(encoding="utf-8"))["metrics"]["speed"]
    for key in ("sentences_per_second", "chars_per_second", "latency_p50_ms", "latency_p95_ms"):
        assert saved[key] == m["speed"][key], key
    assert result["machine"]["cpu"] in saved["machine"] and "no GPU" in saved["machine"]


def test_sizes_counts_and_speed_figures(bench):
    out, result = bench
    (m,) = result["models"]
    assert (m["family"], m["n_train"], m["n_dev"], m["reused"]) == ("crf", 200, 50, False)
    assert m["n_dev_available"] == 5000 and m["dev_limit_source"] == "caller"
    assert m["config"]["max_iterations"] == 20  # the override reached the model
    files = [p for p in (out / "models" / "crf").iterdir() if p.is_file()]
    assert m["size_bytes"] == sum(p.stat().st_size for p in files) > 0
    assert m["dev_chars"] > 50
    speed = m["speed"]
    assert len(speed["predict_seconds"]) == 1 and speed["latency_samples"] == 5
    assert speed["sentences_per_second"] == pytest.approx(50 / speed["predict_seconds_median"])
    assert speed["chars_per_second"] == pytest.approx(m["dev_chars"] / speed["predict_seconds_median"])
    assert 0 < speed["latency_p50_ms"] <= speed["latency_p95_ms"]
    assert speed["train_seconds"] > 0
    assert m["memory"]["peak_rss_mb"] >= m["memory"]["baseline_rss_mb"] > 0
    assert 0 < m["memory"]["predict_peak_rss_mb"] <= m["memory"]["peak_rss_mb"]  # Linux resets the peak
    assert 0 < m["memory"]["train_peak_rss_mb"] <= m["memory"]["peak_rss_mb"]  # trained in a process of its own
    assert m["history"] == [] and "extras" not in m


def test_markdown_has_the_headline_row_and_plots_are_pngs(bench):
    out, result = bench
    (m,) = result["models"]
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "| model | train sents | dev sents | micro F1 |" in md
    assert f"| crf | 200 of 21,003 | 50 of 5,000 | {m['f1']:.4f} | {m['klue_entity_macro_f1']:.4f} |" in md
    assert "## Machine" in md and "Training logs" not in md  # the CRF has no epochs
    for name in ("f1_vs_throughput.png", "per_type_f1.png"):
        assert (out / name).read_bytes()[:8] == PNG_MAGIC
        assert f"]({name})" in md
    assert not (out / "epoch_f1.png").exists()
    assert not list(out.glob(".*"))  # no result files or partial models left behind


def test_reuse_keeps_the_saved_model_and_its_training_time(bench, tmp_path, klue_dir):
    out = tmp_path / "again"
    shutil.copytree(bench[0], out)
    model_path, meta_path = out / "models" / "crf" / "model.crfsuite", out / "models" / "crf" / "kner.json"
    weights, before = model_path.read_bytes(), json.loads(meta_path.read_text(encoding="utf-8"))
    (m,) = run_benchmark(["crf"], str(klue_dir), out, **TINY)["models"]
    after = json.loads(meta_path.read_text(encoding="utf-8"))
    assert model_path.read_bytes() == weights
    assert {k: after[k] for k in ("config", "history", "train_seconds", "saved_at")} == \
        {k: before[k] for k in ("config", "history", "train_seconds", "saved_at")}
    assert after["metrics"]["speed"]["sentences_per_second"] == m["speed"]["sentences_per_second"]
    assert m["reused"] and m["n_train"] == 200 and "train_peak_rss_mb" not in m["memory"]
    assert m["speed"]["train_seconds"] == before["train_seconds"]
    assert "crf (reused)" in (out / "report.md").read_text(encoding="utf-8")


def test_a_reused_model_runs_with_runtime_settings_and_the_report_says_so(tmp_path, klue_dir):
    from kner.models.bilstm_crf import BiLSTMCRFTagger

    train = load_split("train", klue_dir, limit=20)
    BiLSTMCRFTagger(char_dim=16, bigram_dim=8, eojeol_dim=4, kiwi_dim=4, kiwi_vectors=4, kiwi_vocab=100, hidden=16,
                    max_epochs=1, device="cpu").fit(train).save(tmp_path / "models" / "bilstm-crf")
    result = run_benchmark(["bilstm-crf"], str(klue_dir), tmp_path, train_limit=20, dev_limit=20, repeats=1,
                           latency_samples=2, overrides={"bilstm-crf": {"precision": "bf16"}})
    (m,) = result["models"]
    assert m["reused"] and m["run_with"] == {"precision": "bf16"} and m["config"]["precision"] == "bf16"
    assert "run with precision=bf16" in (tmp_path / "report.md").read_text(encoding="utf-8")
    saved = json.loads((tmp_path / "models" / "bilstm-crf" / "kner.json").read_text(encoding="utf-8"))
    assert saved["config"]["precision"] == "auto" and saved["metrics"]["speed"]["run_with"] == {"precision": "bf16"}


def test_a_failing_family_is_reported_and_raised(tmp_path, klue_dir):
    foreign = tmp_path / "models" / "crf"
    foreign.mkdir(parents=True)
    (foreign / "kner.json").write_text('{"family": "bert"}', encoding="utf-8")  # not a CRF: reuse must refuse
    with pytest.raises(BenchmarkError, match="crf failed"):
        run_benchmark(["crf"], str(klue_dir), tmp_path, **TINY)
    result = json.loads((tmp_path / "report.json").read_text(encoding="utf-8"))
    assert "holds a bert model, not crf" in result["models"][0]["error"]
    assert "## Failed" in (tmp_path / "report.md").read_text(encoding="utf-8")
    assert (foreign / "kner.json").read_text(encoding="utf-8") == '{"family": "bert"}'


def test_bad_arguments_fail_before_any_training(tmp_path, klue_dir):
    with pytest.raises(ValueError, match="no hyperparameter learning_rate"):
        run_benchmark(["crf"], str(klue_dir), tmp_path, overrides={"crf": {"learning_rate": 0.1}})
    with pytest.raises(KeyError, match="unknown model family"):
        run_benchmark(["nope"], str(klue_dir), tmp_path)
    with pytest.raises(ValueError, match="repeats"):
        run_benchmark(["crf"], str(klue_dir), tmp_path, repeats=0)
    assert not (tmp_path / "models").exists()


def test_family_benchmark_limits_apply_only_when_the_caller_gives_none(monkeypatch):
    monkeypatch.setattr(CRFTagger, "benchmark_limits", {"train": 2000})
    assert _limit(None, CRFTagger, "train") == (2000, "crf default (benchmark_limits)")
    assert _limit(300, CRFTagger, "train") == (300, "caller")
    assert _limit(None, CRFTagger, "dev") == (None, "full split")


def test_model_size_counts_what_load_reads_not_checkpoints_or_exports(tmp_path):
    (tmp_path / "kner.json").write_bytes(b"x" * 10)
    (tmp_path / "model.pt").write_bytes(b"x" * 100)
    (tmp_path / "encoder").mkdir()  # a Bi-LSTM-CRF's frozen encoder is part of the model
    (tmp_path / "encoder" / "model.safetensors").write_bytes(b"x" * 1000)
    for sub in ("checkpoints", "onnx"):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / "big.bin").write_bytes(b"x" * 5000)
    assert model_bytes(tmp_path) == 1110


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="reads VmHWM from /proc")
def test_peak_memory_counts_live_child_processes(tmp_path):
    before = peak_rss_mb()
    ready = tmp_path / "ready"
    child = subprocess.Popen([sys.executable, "-c", f"import pathlib, time; block = bytearray(300 * 2**20); "
                              f"pathlib.Path({str(ready)!r}).touch(); time.sleep(60)"])
    try:
        while not ready.exists():
            time.sleep(0.05)
        assert peak_rss_mb() - before > 250  # a worker pool's memory is the family's too
    finally:
        child.kill()
        child.wait()
