"""The kner command end to end on a small CRF, and its answers to bad input."""
import json
import re

import pytest

import kner
from kner.cli import main


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, klue_dir):
    out = tmp_path_factory.mktemp("run") / "crf"
    main(["train", "crf", "--data", str(klue_dir), "--out", str(out), "--train-limit", "300",
          "--dev-limit", "50", "--max-iterations", "30", "--c1", "0.1"])
    return out


def test_train_writes_a_self_describing_directory(run_dir):
    meta = json.loads((run_dir / "kner.json").read_text(encoding="utf-8"))
    assert meta["family"] == "crf" and meta["kner_version"] == kner.__version__
    assert meta["config"]["max_iterations"] == 30 and meta["config"]["c1"] == 0.1
    assert meta["labels"] == list(kner.LABELS)
    assert 0.0 <= meta["metrics"]["f1"] <= 1.0 and meta["metrics"]["n_dev"] == 50


def test_evaluate_json_has_the_documented_fields(run_dir, klue_dir, capsys):
    main(["evaluate", str(run_dir), "--data", str(klue_dir), "--limit", "50", "--json"])
    result = json.loads(capsys.readouterr().out)
    for key in ("f1", "precision", "recall", "klue_entity_macro_f1", "klue_char_macro_f1"):
        assert 0.0 <= result[key] <= 1.0
    assert set(result["per_type"]) == set(kner.LABELS)
    meta = json.loads((run_dir / "kner.json").read_text(encoding="utf-8"))
    assert result["f1"] == pytest.approx(meta["metrics"]["f1"])


def test_evaluate_table_shows_the_same_figures_as_json(run_dir, klue_dir, capsys):
    main(["evaluate", str(run_dir), "--data", str(klue_dir), "--limit", "20", "--json"])
    want = json.loads(capsys.readouterr().out)
    main(["evaluate", str(run_dir), "--data", str(klue_dir), "--limit", "20"])
    rows = {line.split()[0]: line.split()[1:] for line in capsys.readouterr().out.splitlines()[2:-1]}
    assert [float(x) for x in rows["micro"][:3]] == [round(want[k], 4) for k in ("precision", "recall", "f1")]
    for label in kner.LABELS:
        assert float(rows[label][2]) == round(want["per_type"][label]["f1"], 4)


def test_evaluate_on_validation_scores_held_out_sentences_and_analyses_errors(tmp_path, klue_dir, capsys):
    from kner import data as kdata
    from kner.scoring import score

    held = tmp_path / "crf-held-out"
    main(["train", "crf", "--data", str(klue_dir), "--out", str(held), "--train-limit", "300", "--dev-limit", "10",
          "--max-iterations", "30", "--hold-out"])
    capsys.readouterr()
    main(["evaluate", str(held), "--data", str(klue_dir), "--on", "validation", "--limit", "60", "--errors", "--json"])
    result = json.loads(capsys.readouterr().out)
    valid = kdata.load_validation(klue_dir, kdata.VALID_FRACTION, 60)
    trained_on = {ex.text for ex in kdata.prepare_splits(klue_dir, 300, 10, hold_out=True, chooses=False).train}
    assert len(valid) == 60 and not trained_on & {ex.text for ex in valid}
    dev_texts = {ex.text for ex in kdata.load_split("dev", klue_dir)}
    assert not dev_texts & {ex.text for ex in valid}
    want = score(valid, kner.load(held).predict([ex.text for ex in valid]))
    assert (result["split"], result["n_sentences"], result["f1"]) == ("validation", 60, pytest.approx(want.f1))
    assert result["errors"]["taxonomy"]["n_gold"] == want.n_gold == sum(len(ex.spans) for ex in valid)
    main(["evaluate", str(held), "--data", str(klue_dir), "--on", "validation", "--limit", "60", "--errors"])
    table = capsys.readouterr().out
    assert "crf on 60 validation sentences" in table and "| validation sents |" in table and "Type confusion" in table


def test_evaluate_on_validation_refuses_a_run_that_trained_on_it(run_dir, klue_dir):
    with pytest.raises(SystemExit, match=r"^kner evaluate: this run trained on the validation sentences[^\n]*$"):
        main(["evaluate", str(run_dir), "--data", str(klue_dir), "--on", "validation"])


def test_predict_prints_markup_and_json(run_dir, capsys):
    main(["predict", str(run_dir), "서울에 갔다", "--format", "json", "a<b>:c"])
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["text"] for r in rows] == ["서울에 갔다", "a<b>:c"]
    for row in rows:
        for e in row["entities"]:
            assert row["text"][e["start"]:e["end"]] == e["text"]
    main(["predict", str(run_dir), "a<b>:c"])
    assert capsys.readouterr().out == "a\\<b\\>:c\n"


def test_predict_batches_files_to_jsonl(run_dir, tmp_path):
    texts = ["이순신 장군은 조선 시대의 명장이다.", "", "😀 漢字 ABC", "가" * 10_000]
    src, dst = tmp_path / "in.txt", tmp_path / "out.jsonl"
    src.write_text("\n".join(texts) + "\n", encoding="utf-8")
    main(["predict", str(run_dir), "--input", str(src), "--output", str(dst), "--batch-size", "2"])
    rows = [json.loads(line) for line in dst.read_text(encoding="utf-8").splitlines()]
    assert [r["text"] for r in rows] == texts
    assert rows[1]["entities"] == []


def test_crf_answers_long_and_strange_text_exactly(run_dir):
    tagger = kner.load(run_dir)
    texts = ["\x00\x1b[31m 이순신 \u200b장군 \ufeff", "서울 " * 2500, "<이순신:PS>"]
    for text, spans in zip(texts, tagger.predict(texts)):
        for s in spans:
            assert 0 <= s.start < s.end <= len(text)


def test_wrong_or_damaged_model_directory_is_a_clear_error(tmp_path, run_dir):
    with pytest.raises(SystemExit, match="not a kner model directory"):
        main(["predict", str(tmp_path), "텍스트"])
    other = tmp_path / "other"
    other.mkdir()
    (other / "kner.json").write_text('{"family": "word2vec"}', encoding="utf-8")
    with pytest.raises(SystemExit, match="does not know"):
        main(["predict", str(other), "텍스트"])
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / "kner.json").write_text((run_dir / "kner.json").read_text(encoding="utf-8"), encoding="utf-8")
    (damaged / "model.crfsuite").write_bytes(b"not a model")
    with pytest.raises(SystemExit, match="missing or damaged"):
        main(["predict", str(damaged), "텍스트"])
    (damaged / "kner.json").write_text("{broken", encoding="utf-8")
    with pytest.raises(SystemExit, match="damaged"):
        main(["predict", str(damaged), "텍스트"])


def test_runtime_settings_a_model_lacks_are_refused_by_name(run_dir):
    with pytest.raises(SystemExit, match="crf model has no setting 'precision'"):
        main(["predict", str(run_dir), "이순신", "--precision", "bf16"])
    with pytest.raises(SystemExit, match="crf model has no setting 'recall_bias'"):
        main(["evaluate", str(run_dir), "--recall-bias", "0"])
    with pytest.raises(SystemExit, match="crf model has no setting 'draft_tokens', 'predict_batch_size'"):
        main(["predict", str(run_dir), "이순신", "--predict-batch-size", "64", "--draft-tokens", "0"])


def test_sllm_decoding_flags_reach_the_model_and_change_speed_not_spans(tmp_path, request, overfit_examples, capsys,
                                                                       monkeypatch):
    from builders import sllm as sllm_builder
    from kner import cli

    sllm_builder.make(tmp_path, request).fit(overfit_examples).save(tmp_path / "sllm")
    capsys.readouterr()  # the Trainer's summary line
    loaded, load = [], cli.models.load
    monkeypatch.setattr(cli.models, "load", lambda *a, **kw: loaded.append(load(*a, **kw)) or loaded[-1])
    texts = [ex.text for ex in overfit_examples]
    outputs = []
    for flags in ([], ["--predict-batch-size", "2", "--draft-tokens", "0"]):
        main(["predict", str(tmp_path / "sllm"), *texts, "--format", "json", *flags])
        outputs.append(capsys.readouterr().out)
    assert [(t.config.predict_batch_size, t.config.draft_tokens) for t in loaded] == [(16, 8), (2, 0)]
    assert outputs[0] == outputs[1] and '"label": "PS"' in outputs[0]


def test_missing_data_directory_says_how_to_fix(tmp_path):
    with pytest.raises(SystemExit, match="KNER_DATA"):
        main(["train", "crf", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "o")])


def test_unknown_family_and_bad_override_are_refused(tmp_path):
    with pytest.raises(SystemExit):
        main(["train", "word2vec", "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="FAMILY.FIELD=VALUE"):
        main(["benchmark", "--models", "crf", "--out", str(tmp_path), "--set", "c1"])
    with pytest.raises(SystemExit, match="no hyperparameter"):
        main(["benchmark", "--models", "crf", "--out", str(tmp_path), "--set", "crf.nope=1"])


def test_a_family_without_its_extra_fails_with_one_line_naming_it(tmp_path):
    import subprocess
    import sys

    blocked = "import sys; sys.modules['transformers'] = None; from kner.cli import main; main()"
    proc = subprocess.run([sys.executable, "-c", blocked, "train", "bert", "--out", str(tmp_path / "run")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr == "kner train: bert needs the deep extra: pip install 'kner[deep]'\n"


def test_percent_signs_in_config_docstrings_reach_the_help_text():
    import argparse
    from dataclasses import dataclass

    from kner.cli import add_config_flags

    @dataclass
    class Config:
        dim: int = 16
        """Size; about 30% slower at 32."""

    parser = argparse.ArgumentParser()
    add_config_flags(parser, Config)
    assert "about 30% slower at 32. (default: 16)" in " ".join(parser.format_help().split())


@pytest.mark.slow
def test_training_log_shows_each_epoch_on_stderr(tmp_path, klue_dir):
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-c", "from kner.cli import main; main()", "train", "bilstm-crf", "--data", str(klue_dir), "--out", str(tmp_path / "run"),
         "--train-limit", "40", "--valid-fraction", "0.25", "--dev-limit", "10", "--max-epochs", "2", "--hidden", "16", "--char-dim", "16",
         "--bigram-dim", "8", "--kiwi-dim", "0", "--kiwi-vectors", "0", "--no-pretrained-init", "--device", "cpu"],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    epochs = re.findall(r"bilstm-crf epoch (\d+): loss ([0-9.]+)", proc.stderr)
    assert [n for n, _ in epochs] == ["1", "2"] and all(float(loss) > 0 for _, loss in epochs)
