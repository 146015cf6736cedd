"""The benchmark report rendered from hand-made results: tables, training logs, extras, plots."""
from __future__ import annotations

import json

import matplotlib.image

from kner.machine import describe_machine, machine_markdown
import pytest

from kner.report import (aggregate_seeds, epoch_log_markdown, headline_row, extras_markdown, fmt_count, fmt_seconds,
                         render_markdown, replace_results, results_table, selection_effect, write_report)
from kner.types import LABELS

HISTORY = [
    {"epoch": 1, "seconds": 10.0, "train_loss": 0.9, "valid_f1": 0.50},
    {"epoch": 2, "seconds": 12.0, "train_loss": 0.5, "valid_f1": 0.70},
    {"epoch": 3, "seconds": 14.0, "train_loss": 0.3, "valid_f1": 0.60},
]


def fake_model(family: str, f1: float, history=(), **more) -> dict:
    return {
        "family": family, "config": {}, "n_train": 2000, "n_train_available": 21003, "train_limit_source": "caller",
        "n_dev": 500, "n_dev_available": 5000, "dev_limit_source": "caller", "dev_chars": 25000,
        "f1": f1, "precision": f1, "recall": f1, "klue_entity_macro_f1": f1 - 0.01, "klue_char_macro_f1": f1 + 0.01,
        "per_type": {t: {"precision": f1, "recall": f1, "f1": f1, "support": 10 + i} for i, t in enumerate(LABELS)},
        "n_gold": 100, "n_pred": 100, "history": list(history), "reused": False, "model_dir": f"out/models/{family}",
        "speed": {"train_seconds": 36.0, "predict_seconds": [2.0], "predict_seconds_median": 2.0,
                  "sentences_per_second": 250.0, "chars_per_second": 12500.0, "latency_samples": 200,
                  "latency_p50_ms": 4.25, "latency_p95_ms": 9.5},
        "size_bytes": 5 * 2**20, "memory": {"peak_rss_mb": 812.4, "baseline_rss_mb": 150.0}, **more,
    }


def fake_result() -> dict:
    return {
        "generated_at": "2025-01-01T00:00:00+0000",
        "machine": {"cpu": "Test CPU", "logical_cores": 2, "usable_cpus": 2, "gpus": [], "ram_gb": 24.0},
        "settings": {"data": "klue", "train_limit": None, "dev_limit": None, "repeats": 3, "latency_samples": 200,
                     "reuse": True},
        "models": [
            fake_model("crf", 0.75),
            fake_model("bilstm_crf", 0.70, HISTORY, extras={"pipeline_f1": 0.6912, "agree": True}),
            fake_model("sllm", 0.55, extras={"constrained": {"f1": 0.55, "invalid": 0},
                                             "unconstrained": {"f1": 0.41, "invalid": 17}}),
            {"family": "bert", "error": "RuntimeError: out of memory"},
        ],
    }


def test_epoch_log_marks_the_best_epoch_and_gives_best_and_mean():
    md = epoch_log_markdown("bilstm_crf", HISTORY)
    assert "| 2 | 12.0 | 0.5000 | **0.7000** (best) |" in md
    assert "| 3 | 14.0 | 0.3000 | 0.6000 |" in md
    assert "Best validation F1 0.7000 at epoch 2" in md
    assert "mean over epochs 0.6000" in md
    assert "3 epochs, 36.0 s of training, mean 12.0 s per epoch" in md
    assert "dev F1" not in md  # no column for dev when it was not monitored


def test_epoch_log_shows_monitored_dev_beside_validation():
    md = epoch_log_markdown("x", [dict(h, dev_f1=0.4 + h["epoch"] / 10) for h in HISTORY])
    assert "| validation F1 | dev F1 (monitored, unused) |" in md
    assert "| 2 | 12.0 | 0.5000 | **0.7000** (best) | 0.6000 |" in md and "| 3 | 14.0 | 0.3000 | 0.6000 | 0.7000 |" in md


def test_epoch_log_states_how_many_held_out_sentences_scored_each_epoch():
    capped = [dict(h, valid_sentences=100) for h in HISTORY[:1]]
    md = epoch_log_markdown("sllm", capped)
    assert "1 epoch, " in md and "Scored on 100 held-out sentences each epoch." in md
    assert "Scored on" not in epoch_log_markdown("bilstm_crf", HISTORY)


def test_epoch_log_without_held_out_scores_still_renders():
    md = epoch_log_markdown("x", [{"epoch": 1, "seconds": 3.0, "train_loss": 1.0, "valid_f1": None}])
    assert "| 1 | 3.0 | 1.0000 | – |" in md and "Best" not in md


def test_markdown_sections_in_order():
    md = render_markdown(fake_result())
    headline = md.index("| model | train sents | dev sents | micro F1 | KLUE entity macro F1 | KLUE char macro F1 | "
                        "train time | sent/s | char/s | p50/p95 ms | size MB | peak RSS MB (run / predicting) |")
    order = [headline, md.index("## F1 per entity type"), md.index("## Training logs"),
             md.index("## Family-specific evaluations"), md.index("## Machine")]
    assert order == sorted(order)
    assert "| crf | 2,000 of 21,003 | 500 of 5,000 | 0.7500 | 0.7400 | 0.7600 | 36.0 s | 250 | 12,500 | 4.2 / 9.5 | 5.0 | 812 |" in md
    with_predicting = fake_model("crf", 0.75, memory={"peak_rss_mb": 1812.4, "predict_peak_rss_mb": 640.2})
    assert headline_row(with_predicting)[-1] == "1,812 / 640"
    assert "| gold entities in dev | 10 | 11 |" in md
    assert "### bilstm_crf" in md and "### crf\n" not in md  # only epoch-trained models get a log
    assert "- **bert**: RuntimeError: out of memory" in md
    assert "2,000 of 21,003 training sentences" in md and "| CPU | Test CPU |" in md


def test_extras_tables_flat_and_nested():
    flat = extras_markdown("bert", {"pipeline_f1": 0.69123, "agree": True})
    assert "| pipeline_f1 | 0.6912 |" in flat and "| agree | True |" in flat
    nested = extras_markdown("sllm", {"constrained": {"f1": 0.55, "invalid": 0, "sentences_per_s": 1088.04},
                                      "unconstrained": {"f1": 0.41, "sentences_per_s": 1.0}})
    assert "|  | f1 | invalid | sentences_per_s |" in nested
    assert "| constrained | 0.5500 | 0 | 1,088.0 |" in nested and "| unconstrained | 0.4100 | – | 1.0 |" in nested


def test_write_report_writes_json_markdown_and_readable_pngs(tmp_path):
    result = fake_result()
    paths = write_report(result, tmp_path)
    assert json.loads(paths["json"].read_text(encoding="utf-8")) == result
    md = paths["md"].read_text(encoding="utf-8")
    for key in ("throughput", "per_type", "epochs"):
        image = matplotlib.image.imread(paths[key])
        assert image.shape[0] > 100 and image.shape[1] > 100
        assert f"]({paths[key].name})" in md


def test_formatting_helpers():
    assert fmt_count(21003, 21003) == "21,003 (all)" and fmt_count(3000, 21003) == "3,000 of 21,003"
    assert fmt_count(None, 5) == "unknown"
    assert (fmt_seconds(None), fmt_seconds(5.04), fmt_seconds(125), fmt_seconds(3725)) == ("–", "5.0 s", "2 m 05 s", "1 h 02 m")


def test_machine_description_names_cpu_ram_and_python():
    info = describe_machine()
    assert info["logical_cores"] >= 1 and info["ram_gb"] > 0 and info["python"].count(".") == 2
    md = machine_markdown(info)
    assert f"| Python | {info['python']} |" in md and "| RAM (GB) |" in md


def test_seed_aggregation_gives_mean_sample_sd_and_best_run():
    runs = [fake_model("bilstm-crf", f1, name=name) for f1, name in
            ((0.80, "bilstm-crf"), (0.86, "bilstm-crf-seed14"), (0.83, "bilstm-crf-seed15"))]
    agg = aggregate_seeds([*runs, fake_model("crf", 0.75), {"family": "bert", "name": "bert", "error": "x"}])
    f1 = agg["bilstm-crf"]["f1"]
    assert f1["mean"] == pytest.approx(0.83) and f1["sd"] == pytest.approx(0.03)  # sample sd of .80 .86 .83
    assert (f1["best"], f1["best_run"]) == (0.86, "bilstm-crf-seed14")
    assert agg["bilstm-crf"]["klue_entity_macro_f1"]["mean"] == pytest.approx(0.82)
    assert agg["crf"]["f1"]["sd"] is None and "bert" not in agg


def test_selection_effect_compares_the_validation_choice_with_the_dev_choice():
    history = [{"epoch": 1, "valid_f1": 0.70, "dev_f1": 0.69}, {"epoch": 2, "valid_f1": 0.74, "dev_f1": 0.71},
               {"epoch": 3, "valid_f1": 0.73, "dev_f1": 0.72}]
    effect = selection_effect(history)
    assert (effect["valid_epoch"], effect["valid_choice_dev_f1"], effect["dev_epoch"]) == (2, 0.71, 3)
    assert effect["overstatement"] == pytest.approx(0.01)
    assert selection_effect(HISTORY) is None  # dev not monitored: nothing to compare


def test_results_table_has_one_row_per_family_and_goes_between_the_markers():
    result = fake_result()
    result["settings"] |= {"recipe": "klue-cpu", "seeds": 2, "select_on": "validation"}
    result["models"].insert(2, fake_model("bilstm_crf", 0.74, name="bilstm_crf-seed14", speed={
        **fake_model("x", 0)["speed"], "sentences_per_second": 999.0}))
    table = results_table(result)
    assert "`kner benchmark --recipe klue-cpu --seeds 2`" in table and "dev not used for selection" in table
    assert "Test CPU" in table
    assert "| `bilstm_crf` | 2,000 of 21,003 | 500 of 5,000 | 0.7200 ± 0.0283 (n=2) | 0.7400 |" in table
    assert "| 999 |" in table  # speed of the best run (seed 14)
    assert "| `crf` |" in table and "bert" not in table  # the failed family has no row
    readme = "# kner\n<!-- results:start -->\nold\n<!-- results:end -->\nrest\n"
    assert replace_results(readme, "NEW") == "# kner\n<!-- results:start -->\nNEW\n<!-- results:end -->\nrest\n"
    with pytest.raises(ValueError, match="markers"):
        replace_results("no markers", "NEW")
