"""One contract every model family passes (flair-style): overfit, exact spans, save, load."""
from __future__ import annotations

import dataclasses
import importlib

import pytest

import kner
from conftest import ODD_TEXTS, interrupt_in_epoch
from kner import models
from kner.models import EpochRecord, refit

pytestmark = pytest.mark.slow  # trains neural models or starts servers: `pytest -m "not slow"` skips them


def tiny_model(family: str, tmp_path, request):
    """Each family's tiny, fast configuration lives in tests/builders/<family>.py."""
    builder = importlib.import_module(f"builders.{family.replace('-', '_')}")
    return builder.make(tmp_path, request)


@pytest.mark.parametrize("family", models.names())
def test_family_overfits_exact_spans_and_survives_save_load(family, tmp_path, request, overfit_examples):
    tagger = tiny_model(family, tmp_path, request)
    texts = [ex.text for ex in overfit_examples]
    snapshot = list(texts)

    tagger.fit(overfit_examples, valid=overfit_examples)
    predicted = tagger.predict(texts)

    assert texts == snapshot, "predict must not mutate its input"
    assert predicted == [sorted(ex.spans) for ex in overfit_examples]

    tagger.save(tmp_path / "model", metrics={"f1": 1.0})
    loaded = kner.load(tmp_path / "model")
    assert type(loaded) is type(tagger)
    machine = {"num_threads": 0} if hasattr(tagger.config, "num_threads") else {}  # the loading machine's
    assert loaded.config == dataclasses.replace(tagger.config, **machine)
    assert loaded.predict(texts) == predicted
    assert loaded.predict(ODD_TEXTS) == tagger.predict(ODD_TEXTS)


@pytest.mark.parametrize("family", models.names())
def test_family_answers_odd_text_with_spans_that_index_it(family, tmp_path, request, overfit_examples):
    tagger = tiny_model(family, tmp_path, request).fit(overfit_examples)
    results = tagger.predict(ODD_TEXTS)
    assert len(results) == len(ODD_TEXTS)
    assert results[0] == [] and results[1] == []
    for text, spans in zip(ODD_TEXTS, results):
        for span in spans:
            assert 0 <= span.start < span.end <= len(text)
            assert span.label in kner.LABELS


@pytest.mark.parametrize("family", models.names())
def test_family_refuses_a_bare_string(family, tmp_path, request):
    with pytest.raises(TypeError, match="list of texts"):
        tiny_model(family, tmp_path, request).predict("이순신")


@pytest.mark.parametrize("family", models.names())
def test_a_reused_model_takes_runtime_settings_but_not_training_ones(family, tmp_path, request, overfit_examples,
                                                                    capsys):
    from kner.benchmark import _reuse

    cls = models.get(family)
    assert set(cls.runtime_settings) <= {f.name for f in dataclasses.fields(cls.Config)}
    tagger = tiny_model(family, tmp_path, request).fit(overfit_examples)
    tagger.save(tmp_path / "model")
    learned = next(f.name for f in dataclasses.fields(cls.Config)
                   if f.name not in cls.runtime_settings and type(getattr(tagger.config, f.name)) is int)
    runtime = {"predict_batch_size": 3} if "predict_batch_size" in cls.runtime_settings else {}
    reused, _ = _reuse(tmp_path / "model", family, {**runtime, learned: getattr(tagger.config, learned) + 1})
    assert getattr(reused.config, learned) == getattr(tagger.config, learned)
    assert all(getattr(reused.config, k) == v for k, v in runtime.items())
    assert learned in capsys.readouterr().err
    texts = [ex.text for ex in overfit_examples]
    assert reused.predict(texts) == tagger.predict(texts)


@pytest.mark.parametrize("family", [name for name in models.names() if models.get(name).epoch_trained])
def test_a_refit_trains_on_train_and_validation_for_the_epoch_count_chosen_there(family, tmp_path, request,
                                                                                  overfit_examples, monkeypatch):
    chosen = tiny_model(family, tmp_path, request)  # as if fit had chosen epoch 2 of 3 on validation
    chosen.history = [EpochRecord(1, 1.0, 0.9, 0.5), EpochRecord(2, 1.0, 0.5, 0.8), EpochRecord(3, 1.0, 0.4, 0.7)]
    chosen.provenance = {"selection": {"on": "validation", "n_valid": 2}}
    seen, fit = [], type(chosen).fit

    def recording_fit(self, train, valid=None):
        seen.append((list(train), valid))
        return fit(self, train, valid)

    monkeypatch.setattr(type(chosen), "fit", recording_fit)
    train, valid = overfit_examples[:3], overfit_examples[3:]

    again = refit(chosen, train, valid)

    assert seen == [([*train, *valid], None)]
    assert [r.epoch for r in again.history] == [1, 2] and all(r.valid_f1 is None for r in again.history)
    settled = {k: v for k, v in dataclasses.asdict(chosen.config).items() if v is not None and k != "checkpoint_dir"}
    assert {k: getattr(again.config, k) for k in settled} == settled  # what fit chose carries over
    assert again.provenance["refit"]["epochs"] == 2 and again.provenance["selection"]["trained_on_validation"]


RESUMABLE = [n for n in models.names() if "resume" in {f.name for f in dataclasses.fields(models.get(n).Config)}]


def four_epochs(family: str, tmp_path, request, folder: str, **settings):
    """The family's tiny model, set to train four epochs with checkpoints in ``tmp_path/folder``."""
    config = tiny_model(family, tmp_path, request).config
    epochs = "max_epochs" if hasattr(config, "max_epochs") else "epochs"
    return models.get(family)(dataclasses.replace(config, **{epochs: 4, "checkpoint_dir": str(tmp_path / folder)},
                                                  **settings))


@pytest.mark.parametrize("family", RESUMABLE)
def test_resume_without_a_checkpoint_dir_is_refused_with_the_fix_before_training(family, tmp_path, request,
                                                                                 overfit_examples):
    tagger = tiny_model(family, tmp_path, request)
    tagger = models.get(family)(dataclasses.replace(tagger.config, resume=True, checkpoint_dir=None))
    with pytest.raises(ValueError, match=r"^resume=True needs checkpoint_dir \(the folder the interrupted run wrote\)$"):
        tagger.fit(overfit_examples, overfit_examples[:3])
    assert tagger.history == []


@pytest.mark.parametrize("family, setting", [pytest.param(f, {}, id=f) for f in RESUMABLE]
                         + [pytest.param("sllm", {"lora": True}, id="sllm-lora")])
def test_an_interrupted_run_resumes_from_its_checkpoint_to_the_model_an_uninterrupted_run_trains(
        family, setting, tmp_path, request, overfit_examples, monkeypatch, caplog):
    train, valid = overfit_examples, overfit_examples[:3]
    straight = four_epochs(family, tmp_path, request, "straight", **setting).fit(train, valid)
    with monkeypatch.context() as m:
        interrupt_in_epoch(m, 3)
        with pytest.raises(KeyboardInterrupt):
            four_epochs(family, tmp_path, request, "stopped", **setting).fit(train, valid)
    with caplog.at_level("INFO", logger="kner"):
        resumed = four_epochs(family, tmp_path, request, "stopped", resume=True, **setting).fit(train, valid)

    assert f"{family} resumed from {tmp_path / 'stopped'}" in caplog.text and "after epoch 2" in caplog.text
    assert [r.epoch for r in resumed.history] == [1, 2, 3, 4]
    assert [(r.train_loss, r.valid_f1) for r in resumed.history] == [(r.train_loss, r.valid_f1) for r in straight.history]
    texts = [ex.text for ex in train] + ODD_TEXTS
    assert resumed.predict(texts) == straight.predict(texts)


@pytest.mark.parametrize("family", RESUMABLE)
def test_an_interrupted_refit_resumes_from_its_own_checkpoint_and_a_finished_one_trains_no_more(
        family, tmp_path, request, overfit_examples, monkeypatch, caplog):
    def chosen(folder: str, **settings):  # as if fit had chosen epoch 3 of 4 on validation
        tagger = four_epochs(family, tmp_path, request, folder, **settings)
        tagger.history = [EpochRecord(e, 1.0, 1.0 / e, f1) for e, f1 in enumerate((0.5, 0.6, 0.8, 0.7), 1)]
        tagger.provenance = {"selection": {"on": "validation", "n_valid": 2}}
        return tagger

    train, valid = overfit_examples[:3], overfit_examples[3:]
    straight = refit(chosen("straight"), train, valid)
    with monkeypatch.context() as m:
        interrupt_in_epoch(m, 2)
        with pytest.raises(KeyboardInterrupt):
            refit(chosen("stopped"), train, valid)
    texts = [ex.text for ex in overfit_examples] + ODD_TEXTS
    for finished_epochs in (1, 3):  # resumed mid-refit, then resumed again once finished
        caplog.clear()
        with caplog.at_level("INFO", logger="kner"):
            resumed = refit(chosen("stopped", resume=True), train, valid)
        assert f"resumed from {tmp_path / 'stopped' / 'refit'}" in caplog.text
        assert f"after epoch {finished_epochs}" in caplog.text
        assert [r.train_loss for r in resumed.history] == [r.train_loss for r in straight.history]
        assert len(resumed.history) == 3
        assert resumed.predict(texts) == straight.predict(texts)
