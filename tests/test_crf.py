"""The CRF's tables from Kiwi's dictionaries travel with the model; worker processes tag exactly as one
process does."""
from __future__ import annotations

import json

import pytest

import kner
from kner.data import load_split
from kner.models import crf
from kner.models.crf import PARALLEL_MIN, CRFTagger

pytestmark = pytest.mark.slow


def test_a_crf_with_gazetteer_and_lexicon_features_loads_without_reading_kiwis_dictionaries(
        tmp_path, monkeypatch, overfit_examples):
    tagger = CRFTagger(c1=0.0, c2=0.001, max_iterations=100, gazetteer=True, lexicon=True, kiwi=False)
    tagger.fit(overfit_examples)
    texts = [ex.text for ex in overfit_examples]
    tagger.save(tmp_path / "model")
    for reader in ("from_kiwi", "lexicon_from_kiwi", "kiwi"):
        monkeypatch.setattr(crf, reader, lambda *a: pytest.fail("loading read Kiwi's dictionaries"))
    loaded = kner.load(tmp_path / "model")
    assert loaded.featurizer.gazetteer.table == tagger.featurizer.gazetteer.table
    assert loaded.featurizer.lexicon.table == tagger.featurizer.lexicon.table
    assert any(feature.startswith("x=B-") for row in next(loaded.featurizer.many(texts[:1])) for feature in row)
    assert loaded.predict(texts) == tagger.predict(texts) == [sorted(ex.spans) for ex in overfit_examples]


@pytest.mark.parametrize("kiwi", [True, False])
def test_worker_processes_give_the_spans_of_one_process(klue_dir, tmp_path, kiwi):
    tagger = CRFTagger(max_iterations=20, kiwi=kiwi, gazetteer=not kiwi, lexicon=not kiwi)
    tagger.fit(load_split("train", klue_dir, limit=200))
    texts = [ex.text for ex in load_split("dev", klue_dir, limit=PARALLEL_MIN + 37)]
    alone = tagger.predict(texts)
    assert sum(map(len, alone)) > 0
    tagger.save(tmp_path / "model")
    pooled = kner.load(tmp_path / "model", workers=2)
    assert pooled.predict(texts) == alone and pooled._pool is not None
    assert pooled.predict(texts[:3]) == alone[:3]  # a small batch stays in this process


def test_a_crf_saved_before_the_lexicon_features_loads_without_them(tmp_path, overfit_examples):
    tagger = CRFTagger(c1=0.0, c2=0.001, max_iterations=50, lexicon=False).fit(overfit_examples)
    tagger.save(tmp_path / "model")
    meta_file = tmp_path / "model" / "kner.json"
    meta = json.loads(meta_file.read_text(encoding="utf-8"))
    del meta["config"]["lexicon"]  # as kner.json was written before the setting existed
    meta_file.write_text(json.dumps(meta), encoding="utf-8")
    loaded = kner.load(tmp_path / "model")
    assert loaded.config.lexicon is False and loaded.featurizer.lexicon is None
    texts = [ex.text for ex in overfit_examples]
    assert loaded.predict(texts) == tagger.predict(texts)
