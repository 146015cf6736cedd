"""The CRF's gazetteer table travels with the model; worker processes tag exactly as one process does."""
from __future__ import annotations

import pytest

import kner
from kner.data import load_split
from kner.models import crf
from kner.models.crf import PARALLEL_MIN, CRFTagger

pytestmark = pytest.mark.slow


def test_a_crf_with_gazetteer_features_loads_without_reading_kiwis_dictionaries(tmp_path, monkeypatch,
                                                                                 overfit_examples):
    tagger = CRFTagger(c1=0.0, c2=0.001, max_iterations=100, gazetteer=True).fit(overfit_examples)
    texts = [ex.text for ex in overfit_examples]
    tagger.save(tmp_path / "model")
    monkeypatch.setattr(crf, "from_kiwi", lambda *a: pytest.fail("loading read the dictionaries"))
    loaded = kner.load(tmp_path / "model")
    assert loaded.featurizer.gazetteer.table == tagger.featurizer.gazetteer.table
    assert loaded.predict(texts) == tagger.predict(texts) == [sorted(ex.spans) for ex in overfit_examples]


@pytest.mark.parametrize("kiwi", [True, False])
def test_worker_processes_give_the_spans_of_one_process(klue_dir, tmp_path, kiwi):
    tagger = CRFTagger(max_iterations=20, kiwi=kiwi, gazetteer=not kiwi).fit(load_split("train", klue_dir, limit=200))
    texts = [ex.text for ex in load_split("dev", klue_dir, limit=PARALLEL_MIN + 37)]
    alone = tagger.predict(texts)
    assert sum(map(len, alone)) > 0
    tagger.save(tmp_path / "model")
    pooled = kner.load(tmp_path / "model", workers=2)
    assert pooled.predict(texts) == alone and pooled._pool is not None
    assert pooled.predict(texts[:3]) == alone[:3]  # a small batch stays in this process
