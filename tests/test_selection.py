"""Honest selection: a validation split held out of train, dev never reaching fit, the shared
keep-the-best-epoch logic, recipes, seeds and a resumable benchmark."""
from __future__ import annotations

import json
import random
import shutil
from types import SimpleNamespace

import pytest

from kner import benchmark, models, recipe
from kner.cli import main
from kner.data import VALID_RULE, held_out_fraction, load_split, load_validation, prepare_splits, split_validation
from kner.models.bilstm_crf import BiLSTMCRFConfig, BiLSTMCRFTagger
from kner.models.crf import CRFConfig
from kner.models.selection import EpochSelector
from kner.types import Example, Span


def _examples(n: int) -> list[Example]:
    return [Example(f"문장 {i} 번째", (Span(0, 2, "QT"),), f"id-{i}") for i in range(n)]


def test_validation_split_is_deterministic_order_free_and_disjoint():
    train = _examples(2000)
    rest, valid = split_validation(train)
    shuffled = random.Random(0).sample(train, len(train))
    assert split_validation(train) == (rest, valid)
    assert {ex.text for ex in split_validation(shuffled)[1]} == {ex.text for ex in valid}
    assert not {ex.text for ex in rest} & {ex.text for ex in valid}
    assert len(rest) + len(valid) == 2000 and 60 <= len(valid) <= 140  # about 5%


def test_repeated_texts_stay_together_and_dev_texts_are_never_held_out():
    train = _examples(400) * 2  # every text twice
    rest, valid = split_validation(train, 0.2)
    assert {ex.text for ex in rest}.isdisjoint(ex.text for ex in valid)
    dev = valid[:5]
    rest2, valid2 = split_validation(train, 0.2, exclude=dev)
    assert {ex.text for ex in dev}.isdisjoint(ex.text for ex in valid2)
    assert {ex.text for ex in dev} <= {ex.text for ex in rest2}


@pytest.mark.parametrize("fraction", [0, 1, -0.1, 1.5])
def test_a_fraction_outside_zero_one_is_refused(fraction):
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        split_validation(_examples(10), fraction)


def test_klue_validation_split_is_about_a_thousand_sentences_and_disjoint_from_dev(klue_dir):
    splits = prepare_splits(klue_dir)
    dev_texts = {ex.text for ex in load_split("dev", klue_dir)}
    assert 950 <= len(splits.valid) <= 1150 and len(splits.train) + len(splits.valid) == 21003
    assert dev_texts.isdisjoint(ex.text for ex in splits.valid)
    assert {ex.text for ex in splits.train}.isdisjoint(ex.text for ex in splits.valid)
    assert splits.selection["dev_used_for_selection"] is False and "dev not used" in splits.selection["note"]


def _recording_fit(seen: dict):
    class Stop(Exception):
        pass

    def fit(self, train, valid=None):
        seen.update(train=list(train), valid=list(valid or []), monitor=list(self.monitor))
        raise Stop

    return fit, Stop


@pytest.mark.slow
def test_no_dev_sentence_reaches_fit_from_kner_train(klue_dir, tmp_path, monkeypatch):
    seen: dict = {}
    fit, stop = _recording_fit(seen)
    monkeypatch.setattr(BiLSTMCRFTagger, "fit", fit)
    with pytest.raises(stop):
        main(["train", "bilstm-crf", "--data", str(klue_dir), "--out", str(tmp_path / "run"), "--train-limit", "600",
              "--dev-limit", "200"])
    dev = {ex.text for ex in load_split("dev", klue_dir)}
    assert seen["valid"] and dev.isdisjoint(ex.text for ex in seen["train"] + seen["valid"])
    assert len(seen["train"]) + len(seen["valid"]) == 600


@pytest.mark.slow
def test_no_dev_sentence_reaches_fit_from_the_benchmark_unless_only_monitored(klue_dir, tmp_path, monkeypatch):
    seen: dict = {}
    fit, stop = _recording_fit(seen)
    monkeypatch.setattr(BiLSTMCRFTagger, "fit", fit)
    settings = {"data": str(klue_dir), "out": str(tmp_path), "train_limit": 600, "dev_limit": 200, "reuse": False,
                "repeats": 1, "latency_samples": 1, "recipe": None, "select_on": "validation", "valid_fraction": 0.05,
                "monitor_dev": True}
    (job,) = benchmark._jobs("bilstm-crf", None, {}, 1, settings)
    with pytest.raises(stop):
        benchmark.train_family(job)
    dev = load_split("dev", klue_dir, limit=200)
    assert {ex.text for ex in dev}.isdisjoint(ex.text for ex in seen["train"] + seen["valid"])
    assert seen["monitor"] == dev  # scored for the record only (EpochSelector never chooses on it)


def test_selecting_on_dev_must_be_asked_for_and_is_labelled(klue_dir):
    splits = prepare_splits(klue_dir, train_limit=300, dev_limit=40, select_on="dev")
    assert splits.valid == splits.dev and len(splits.train) == 300
    assert splits.selection["dev_used_for_selection"] is True and "optimistic" in splits.selection["note"]
    with pytest.raises(ValueError, match="select_on"):
        prepare_splits(klue_dir, select_on="test")


def test_a_family_that_chooses_nothing_trains_on_all_of_train(klue_dir):
    splits = prepare_splits(klue_dir, train_limit=300, dev_limit=40, hold_out=False)
    assert (len(splits.train), splits.valid, splits.selection["on"]) == (300, [], "nothing")


def test_a_family_that_chooses_nothing_can_hold_the_same_validation_out_for_ensembles(klue_dir):
    held = prepare_splits(klue_dir, train_limit=300, dev_limit=40, chooses=False)
    chosen = prepare_splits(klue_dir, train_limit=300, dev_limit=40)
    assert held.valid and (held.train, held.valid) == (chosen.train, chosen.valid)
    assert (held.selection["on"], held.selection["n_valid"]) == ("nothing", len(held.valid))


def test_a_run_held_out_validation_is_found_again_from_its_selection_record(klue_dir):
    splits = prepare_splits(klue_dir, train_limit=2000, dev_limit=40, valid_fraction=0.1)
    fraction = held_out_fraction(splits.selection)
    older = {k: v for k, v in splits.selection.items() if k != "valid_fraction"}  # saved before the field existed
    assert fraction == held_out_fraction(older) == 0.1
    again = {ex.text for ex in load_validation(klue_dir, fraction)}
    assert {ex.text for ex in splits.valid} <= again and not again & {ex.text for ex in splits.train}


@pytest.mark.parametrize("selection", [{"on": "nothing", "n_valid": 0}, {"on": "dev", "n_valid": 40}, {},
                                       {"on": "validation", "n_valid": 40, "trained_on_validation": True}])
def test_a_run_that_trained_on_validation_has_no_held_out_fraction(selection):
    with pytest.raises(ValueError, match="trained on the validation sentences"):
        held_out_fraction(selection)


def test_a_held_out_fraction_is_read_from_the_rule_of_older_runs_or_refused():
    assert held_out_fraction({"on": "validation", "n_valid": 5, "rule": VALID_RULE.format(fraction=0.05)}) == 0.05
    with pytest.raises(ValueError, match="does not record"):
        held_out_fraction({"on": "validation", "n_valid": 5, "rule": "some other rule"})


class _Tagger(SimpleNamespace):
    family = "fake"
    refit_epochs = None  # as on every Tagger: None unless a refit set the epoch count


def test_selector_keeps_the_best_held_out_epoch_stops_on_patience_and_never_chooses_on_monitor():
    gold = [Example("가나", (Span(0, 2, "PS"),)), Example("다라", (Span(0, 2, "LC"),))]
    tagger = _Tagger(history=[], monitor=gold)
    selector = EpochSelector(tagger, gold, patience=2)
    right, wrong = [[Span(0, 2, "PS")], [Span(0, 2, "LC")]], [[], []]
    # held-out F1 per epoch: 0, 1, 0, 0 — the monitored examples are perfect at epoch 4
    plans = [(wrong, wrong), (right, wrong), (wrong, wrong), (wrong, right)]
    for epoch, (valid_spans, monitor_spans) in enumerate(plans, 1):
        assert not selector.should_stop
        selector.end_epoch(epoch, 1.0, 0.5, lambda role: valid_spans if role == "valid" else monitor_spans,
                           lambda: {"epoch": epoch})
    assert selector.best_state == {"epoch": 2} and selector.best_f1 == 1.0 and selector.should_stop
    assert [r.valid_f1 for r in tagger.history] == [0.0, 1.0, 0.0, 0.0]
    assert [r.dev_f1 for r in tagger.history] == [0.0, 0.0, 0.0, 1.0]


def test_without_held_out_examples_the_last_epoch_is_kept_and_training_never_stops_early():
    selector = EpochSelector(_Tagger(history=[], monitor=[]), None, patience=1)
    for epoch in (1, 2, 3):
        selector.end_epoch(epoch, 1.0, 0.5, lambda role: [], lambda: {"epoch": epoch})
    assert selector.best_state == {"epoch": 3} and not selector.should_stop


def test_a_refit_stops_after_the_epochs_it_was_given_even_without_held_out_examples():
    selector = EpochSelector(_Tagger(history=[], monitor=[], refit_epochs=2), None, patience=None)
    epoch = 0
    while not selector.should_stop and epoch < 5:
        epoch += 1
        selector.end_epoch(epoch, 1.0, 0.5, lambda role: [], lambda: {"epoch": epoch})
    assert epoch == 2 and selector.best_state == {"epoch": 2}  # the last epoch trained is kept


@pytest.mark.slow
def test_recall_bias_is_chosen_on_the_held_out_examples(overfit_examples):
    tiny = dict(char_dim=16, bigram_dim=8, eojeol_dim=4, kiwi_vectors=0, kiwi_dim=0, hidden=16, max_epochs=2,
                num_threads=1, pretrained_init=False)
    chosen = BiLSTMCRFTagger(**tiny).fit(overfit_examples, valid=overfit_examples)
    assert chosen.config.recall_bias in (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)
    assert BiLSTMCRFTagger(**tiny).fit(overfit_examples).config.recall_bias == 0.0  # nothing held out
    assert BiLSTMCRFTagger(**tiny, recall_bias=0.3).fit(overfit_examples, overfit_examples).config.recall_bias == 0.3


# --- recipes ----------------------------------------------------------------------------------
def test_built_in_recipes_load_and_resolve_for_every_family(monkeypatch):
    monkeypatch.setenv("KNER_MODELS", "/models")
    assert {"klue-cpu", "klue-gpu"} <= set(recipe.names())
    cpu = recipe.load("klue-cpu")
    config, run = recipe.resolve(cpu, "sllm", models.get("sllm").Config, {"lr": 1e-3})
    assert config["base_model"] == "/models/gemma-3-270m" and config["lr"] == 1e-3
    assert run == {"train_limit": 2000, "dev_limit": 500}
    encoders = {"encoder": "/models/gemma-3-270m", "encoder_norm": True, "encoder2": "/models/multilingual-e5-small"}
    assert recipe.resolve(cpu, "bilstm-crf", BiLSTMCRFConfig, {}) == (encoders, {})
    bert = recipe.load("klue-gpu")["families"]["bert"]
    assert bert == {"base_model": "klue/bert-base", "lr": 5e-5, "batch_size": 32, "epochs": 5, "warmup_ratio": 0.1,
                    "weight_decay": 0.01, "precision": "fp16", "seed": 42, "max_length": 128, "device": "cuda"}
    for name in recipe.names():
        for family in recipe.load(name)["families"]:
            recipe.resolve(recipe.load(name), family, models.get(family).Config, {})  # no unknown key shipped


def test_recipe_values_yield_to_flags_and_name_the_pretrained_folder(monkeypatch):
    monkeypatch.setenv("KNER_MODELS", "/opt/models")
    cpu = {"name": "t", "families": {"crf": {"c1": 0.2, "window": 2, "train_limit": 500},
                                     "bert": {"base_model": "${KNER_MODELS}/e5"}}}
    config, run = recipe.resolve(cpu, "crf", CRFConfig, {"c1": 0.3, "c2": None})
    assert config == {"c1": 0.3, "window": 2} and run == {"train_limit": 500}
    assert recipe._expand(cpu["families"]["bert"]["base_model"]) == "/opt/models/e5"


def test_unknown_recipe_keys_and_names_are_refused_with_the_valid_ones(tmp_path):
    bad = {"name": "t", "families": {"crf": {"c3": 1}}}
    with pytest.raises(ValueError, match=r"crf has no setting 'c3'; valid names: .*c1, c2"):
        recipe.resolve(bad, "crf", CRFConfig, {})
    with pytest.raises(ValueError, match="unknown recipe 'fast'; choose one of .*klue-cpu"):
        recipe.load("fast")
    path = tmp_path / "mine.toml"
    path.write_text('description = "x"\nwindow = 2\n', encoding="utf-8")
    with pytest.raises(ValueError, match="must be \\[family\\] tables"):
        recipe.load(str(path))


def test_kner_train_records_the_recipe_and_the_selection_in_kner_json(klue_dir, tmp_path):
    out = tmp_path / "crf"
    main(["train", "crf", "--data", str(klue_dir), "--out", str(out), "--train-limit", "200", "--dev-limit", "30",
          "--recipe", "klue-cpu", "--max-iterations", "10"])
    meta = json.loads((out / "kner.json").read_text(encoding="utf-8"))
    assert meta["provenance"]["recipe"] == "klue-cpu" and meta["provenance"]["selection"]["on"] == "nothing"
    assert meta["config"]["max_iterations"] == 10 and meta["metrics"]["n_train"] == 200


@pytest.mark.slow
def test_kner_train_refit_trains_again_on_validation_too_and_the_run_says_so(klue_dir, tmp_path, capsys):
    tiny = ["--char-dim", "16", "--bigram-dim", "8", "--eojeol-dim", "4", "--kiwi-dim", "4", "--kiwi-vectors", "4",
            "--kiwi-vocab", "100", "--hidden", "16", "--max-epochs", "3", "--device", "cpu"]
    out, data = tmp_path / "run", ["--data", str(klue_dir)]
    main(["train", "bilstm-crf", *data, "--out", str(out), "--train-limit", "300", "--dev-limit", "30", *tiny,
          "--refit"])
    meta = json.loads((out / "kner.json").read_text(encoding="utf-8"))
    chosen = meta["provenance"]["refit"]
    best = max(chosen["history"], key=lambda r: r["valid_f1"])
    assert best["epoch"] == chosen["epochs"] == len(meta["history"]) and len(chosen["history"]) == 3
    assert meta["metrics"]["n_train"] == 300 and meta["metrics"]["before_refit"]["f1"] >= 0
    printed = capsys.readouterr().out
    assert "before the refit" in printed
    size = sum(f.stat().st_size for f in (out / "checkpoints").rglob("*") if f.is_file()) / 2**20
    assert f"checkpoints for --resume: {out / 'checkpoints'} ({size:,.0f} MB); delete the folder" in printed
    with pytest.raises(SystemExit, match=r"^kner evaluate: this run trained on the validation sentences[^\n]*$"):
        main(["evaluate", str(out), *data, "--on", "validation"])


@pytest.mark.parametrize(("argv", "problem"), [(["crf"], "crf chooses no epoch"),
                                               (["bilstm-crf", "--select-on", "dev"], "--refit with --select-on dev")])
def test_a_refit_is_refused_where_no_epoch_is_chosen_or_it_would_train_on_dev(tmp_path, argv, problem):
    with pytest.raises(SystemExit, match=rf"^kner train: [^\n]*{problem}[^\n]*$"):
        main(["train", argv[0], "--out", str(tmp_path / "run"), "--refit", *argv[1:]])


# --- seeds and resume -------------------------------------------------------------------------
def test_seeded_families_get_one_job_per_seed_and_the_crf_one():
    settings = {"train_limit": None, "dev_limit": None}
    jobs = benchmark._jobs("bilstm-crf", recipe.load("klue-cpu"), {"seed": 7, "hidden": 64}, 3, settings)
    assert [(j["name"], j["seed"], j["overrides"]["seed"]) for j in jobs] == [
        ("bilstm-crf", 7, 7), ("bilstm-crf-seed8", 8, 8), ("bilstm-crf-seed9", 9, 9)]
    assert all(j["overrides"]["hidden"] == 64 for j in jobs)
    assert [j["name"] for j in benchmark._jobs("crf", None, {}, 3, settings)] == ["crf"]  # deterministic: once


@pytest.mark.slow
def test_resume_keeps_finished_parts_and_refuses_other_settings(klue_dir, tmp_path, monkeypatch):
    tiny = dict(train_limit=150, dev_limit=20, overrides={"crf": {"max_iterations": 5}}, repeats=1, latency_samples=2)
    first = benchmark.run_benchmark(["crf"], str(klue_dir), tmp_path, **tiny)
    assert (tmp_path / "parts" / "crf.json").is_file()

    def no_child(job):
        raise AssertionError(f"{job['name']} ran again although it had finished")

    monkeypatch.setattr(benchmark, "_run_in_child", no_child)
    again = benchmark.run_benchmark(["crf"], str(klue_dir), tmp_path, resume=True, **tiny)
    assert again["models"][0]["resumed"] and again["models"][0]["f1"] == first["models"][0]["f1"]
    assert again["models"][0]["machine_line"] and again["models"][0]["finished_at"]
    with pytest.raises(ValueError, match="other settings"):
        benchmark.run_benchmark(["crf"], str(klue_dir), tmp_path, resume=True, **{**tiny, "train_limit": 160})


@pytest.mark.slow
def test_resume_continues_an_interrupted_family_from_its_last_checkpoint(klue_dir, tmp_path):
    tiny = dict(train_limit=40, dev_limit=20, repeats=1, latency_samples=2, overrides={"bilstm-crf": {
        "char_dim": 16, "bigram_dim": 8, "eojeol_dim": 4, "kiwi_dim": 4, "kiwi_vectors": 4, "kiwi_vocab": 100,
        "hidden": 16, "max_epochs": 2}})
    first = benchmark.run_benchmark(["bilstm-crf"], str(klue_dir), tmp_path, **tiny)["models"][0]
    # Interrupted after the last checkpoint, before the model and its part were written.
    (tmp_path / "parts" / "bilstm-crf.json").unlink()
    shutil.rmtree(tmp_path / "models" / "bilstm-crf")
    again = benchmark.run_benchmark(["bilstm-crf"], str(klue_dir), tmp_path, resume=True, **tiny)["models"][0]
    assert not again.get("resumed")  # it ran, but trained no epoch again: the history is the checkpoint's
    assert [h["seconds"] for h in again["history"]] == [h["seconds"] for h in first["history"]]
    assert again["f1"] == first["f1"]


def test_a_set_too_small_for_the_rule_still_holds_out_one_text():
    rest, valid = split_validation(_examples(20), 0.001)  # no key of these 20 texts falls below 0.001
    assert len(valid) == 1 and len(rest) == 19
    with pytest.raises(ValueError, match="leaves 0 to train on"):
        split_validation(_examples(1))
