"""BiLSTM-CRF: the CRF layer against brute force, exact resumption, unknown characters, features."""
from __future__ import annotations

import dataclasses
import itertools
import json

import pytest
import torch

import kner
from conftest import ODD_TEXTS
from kner.align import bio_labels
from kner.models import bilstm_crf, refit
from kner.models.bilstm_crf import BiLSTMCRFTagger
from kner.models.bilstm_inputs import CLASSES, GAZ, LEX, MORPH, Vocab
from kner.models.crf_layer import CRF, iob2_allowed
from kner.models.hf_common import autocast
from kner.models.selection import learned_config

pytestmark = pytest.mark.slow  # trains neural models or starts servers: `pytest -m "not slow"` skips them

TINY = dict(char_dim=16, bigram_dim=8, eojeol_dim=4, kiwi_vectors=4, kiwi_vocab=100, hidden=16, dropout=0.2,
            batch_size=2, lr=0.02,
            warmup_steps=2, device="cpu", num_threads=1)


def _random_crf(tags, constrained, seed):
    g = torch.Generator().manual_seed(seed)
    allowed, start = iob2_allowed(tags) if constrained else (None, None)
    crf = CRF(len(tags), allowed, start)
    with torch.no_grad():
        for p in crf.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    return crf


def _brute_force(crf, emissions, length):
    """log Z and the best path of one sentence by scoring every allowed tag sequence."""
    n = crf.num_tags
    scores = {}
    for path in itertools.product(range(n), repeat=length):
        if not crf.start_allowed[path[0]] or any(not crf.allowed[a, b] for a, b in zip(path, path[1:])):
            continue
        s = crf.start[path[0]] + crf.end[path[-1]] + sum(emissions[t, k] for t, k in enumerate(path))
        scores[path] = s + sum(crf.transitions[a, b] for a, b in zip(path, path[1:]))
    best = max(scores, key=lambda p: scores[p].item())
    return torch.logsumexp(torch.stack(list(scores.values())), 0), best, scores[best]


@pytest.mark.parametrize("constrained", [False, True])
def test_crf_log_partition_and_viterbi_match_brute_force_on_a_padded_batch(constrained):
    tags = bio_labels(["PS"])  # O, B-PS, I-PS
    crf = _random_crf(tags, constrained, seed=1)
    lengths = torch.tensor([4, 1, 3, 2])
    emissions = torch.randn(4, 4, len(tags), generator=torch.Generator().manual_seed(2))
    mask = torch.arange(4) < lengths[:, None]
    with torch.no_grad():
        log_z = crf.log_partition(emissions, mask)
        best = crf.decode(emissions, mask)
        for b, n in enumerate(lengths.tolist()):
            want_z, want_path, want_score = _brute_force(crf, emissions[b], n)
            assert log_z[b].item() == pytest.approx(want_z.item(), abs=1e-4)
            assert tuple(best[b, :n].tolist()) == want_path
            got = crf.path_score(emissions[b : b + 1], best[b : b + 1], mask[b : b + 1])
            assert got.item() == pytest.approx(want_score.item(), abs=1e-4)


def test_crf_nll_is_a_proper_negative_log_probability():
    tags = bio_labels(["PS", "LC"])[:4]  # O, B-PS, I-PS, B-LC: 4 tags, 3 positions = 64 paths
    crf = _random_crf(tags, constrained=True, seed=3)
    emissions = torch.randn(1, 3, 4, generator=torch.Generator().manual_seed(4))
    mask = torch.ones(1, 3, dtype=torch.bool)
    with torch.no_grad():
        total = sum(torch.exp(-crf.nll(emissions, torch.tensor([p]), mask))
                    for p in itertools.product(range(4), repeat=3)
                    if crf.start_allowed[p[0]] and all(crf.allowed[a, b] for a, b in zip(p, p[1:])))
    assert total.item() == pytest.approx(1.0, abs=1e-4)


def test_iob2_constraints_forbid_inside_tags_that_continue_nothing():
    tags = bio_labels(["PS", "LC"])
    allowed, start = iob2_allowed(tags)
    ix = tags.index
    assert not start[ix("I-PS")] and start[ix("B-PS")] and start[ix("O")]
    assert allowed[ix("B-PS"), ix("I-PS")] and allowed[ix("I-PS"), ix("I-PS")]
    assert not allowed[ix("O"), ix("I-PS")] and not allowed[ix("B-LC"), ix("I-PS")]
    assert allowed[ix("I-LC"), ix("B-PS")] and allowed[ix("I-LC"), ix("O")]


def test_constrained_viterbi_never_emits_an_invalid_sequence():
    tags = bio_labels()
    crf = CRF(len(tags), *iob2_allowed(tags))  # zero transitions: only the constraints steer
    emissions = torch.randn(16, 12, len(tags), generator=torch.Generator().manual_seed(5)) * 5
    with torch.no_grad():
        paths = crf.decode(emissions, torch.ones(16, 12, dtype=torch.bool))
    for path in paths.tolist():
        names = [tags[t] for t in path]
        for prev, cur in zip(["O"] + names, names):
            if cur.startswith("I-"):
                assert prev in (f"B-{cur[2:]}", cur)


def test_unknown_characters_get_their_class_unk_and_keep_offsets():
    vocab = Vocab(["가", "나"], [], [])
    text = "가漢😀a나"
    ids = vocab.encode(text, None)
    assert ids.shape == (len(text), 11)
    assert ids[1, 0].item() == vocab.unk["C"] and ids[3, 0].item() == vocab.unk["L"]
    assert ids[0, 0].item() == vocab.char_id["가"] and ids[0, 0].item() > len(CLASSES)


def test_encoding_texts_together_equals_encoding_each_alone():
    vocab = Vocab(["가", "나"], ["\x02가", "가나", "나\x03", "가 "], ["B-NNP", "I-NNP"], gaz=["B-Q5", "I-Q5"],
                  lex=["U", "B-NNG", "I-NNG"])
    texts = ["가나", "나 가漢", "가"]
    feats = [(["B-NNP", "I-NNP"], [-1, -1]), None, (["B-NNP"], [-1])]
    gaz = [["B-Q5", "I-Q5"], None, ["O"]]
    lex = [["B-NNG", "I-NNG"], ["B-NNG", "O", "B-NNG", "U"], None]
    together = vocab.encode_many(texts, feats, gaz_tags=gaz, lex_tags=lex)
    assert [t.shape for t in together] == [(2, 11), (4, 11), (1, 11)]
    for text, f, g, x, ids in zip(texts, feats, gaz, lex, together):
        assert torch.equal(ids, vocab.encode(text, f, g, x))
    assert together[0][:, 1].tolist() == [vocab.bigram_id["\x02가"], vocab.bigram_id["가나"]]
    assert together[0][:, 7].tolist() == [vocab.pos_id["B-NNP"], vocab.pos_id["I-NNP"]]
    assert together[0][:, GAZ].tolist() == [vocab.gaz_id["B-Q5"], vocab.gaz_id["I-Q5"]]
    assert together[1][:, GAZ].tolist() == together[2][:, GAZ].tolist() + [0] * 3 == [0] * 4  # no match: 0
    assert together[1][:, LEX].tolist() == [vocab.lex_id["B-NNG"], 0, vocab.lex_id["B-NNG"], vocab.lex_id["U"]]
    assert together[2][:, LEX].tolist() == [0]


def test_kiwi_morpheme_vectors_give_back_kiwis_own_similarities():
    import numpy as np

    from kner.morphology import kiwi, morpheme_vectors

    ids = [t.id for t in kiwi().tokenize("이순신 장군은 조선 시대에 서울에서 태어났다.")]
    sim = np.array([[kiwi().morpheme_similarity(a, b) for b in ids] for a in ids])
    full = morpheme_vectors(ids, 256)  # all of the model's dimensions: the embeddings themselves
    assert np.allclose(full @ full.T, sim, atol=1e-3)
    assert morpheme_vectors(ids, 16).shape == (len(ids), 16)
    with pytest.raises(ValueError, match="256 dimensions"):
        morpheme_vectors(ids, 300)


def test_a_morpheme_without_a_vector_row_takes_its_tags_generic_row():
    from kner.morphology import kiwi, kiwi_placeholder

    name, seoul = (t.id for t in kiwi().tokenize("이순신 서울")[:2])  # both NNP
    generic = kiwi_placeholder(name)
    vocab = Vocab(["가"], [], [], morphemes=[generic, seoul])  # no row for the name itself
    ids = vocab.encode("가 서울", (["_"] * 4, [name, -1, seoul, seoul]))
    assert ids[:, 8].tolist() == [vocab.morph_row[generic], 0, vocab.morph_row[seoul], vocab.morph_row[seoul]]
    assert generic == kiwi_placeholder(seoul) != seoul


def test_a_morpheme_outside_the_table_gets_its_own_kiwi_vector_which_is_not_saved(tmp_path, overfit_examples):
    from kner.morphology import first_vocabulary_id, kiwi, kiwi_placeholder, morpheme_vectors

    tagger = BiLSTMCRFTagger(**TINY, max_epochs=1).fit(overfit_examples)
    path = tagger.save(tmp_path / "model")
    text = "퇴계 이황은 도산서원에서 제자를 길렀다."
    token = next(t for t in kiwi().tokenize(text) if t.id >= first_vocabulary_id() and t.id not in tagger.vocab.morph_row)
    x = tagger._encode([text])[0]  # (len(text), 11)
    weight = tagger.net.morph.weight  # (table, 4)
    assert x[token.start, MORPH].item() >= weight.size(0)
    got = tagger.net._morph_vectors(x[:, MORPH], tagger._extra_vectors)[token.start]
    own, known = torch.tensor(morpheme_vectors([token.id, tagger.vocab.morphemes[-1]], 4), dtype=torch.float32)
    assert torch.allclose(got, own * weight[-1].norm() / known.norm(), atol=1e-5)  # Kiwi's vector, the table's scale
    assert not torch.allclose(got, weight[tagger.vocab.morph_row[kiwi_placeholder(token.id)]])
    spans = tagger.predict([text])
    again = kner.load(tagger.save(tmp_path / "after"))
    assert again.vocab.morphemes == kner.load(path).vocab.morphemes  # the cache stays out of the model
    assert again.predict([text]) == spans


def test_predicting_on_several_threads_gives_each_unseen_morpheme_one_row(tmp_path, overfit_examples):
    from concurrent.futures import ThreadPoolExecutor

    path = BiLSTMCRFTagger(**TINY, max_epochs=1).fit(overfit_examples).save(tmp_path / "model")
    texts = ["퇴계 이황은 도산서원에서 제자를 길렀다.", "율곡 이이는 강릉 오죽헌에서 태어났다.",
             "다산 정약용은 강진에서 목민심서를 썼다.", "허준은 동의보감을 지었다."] * 4
    one_thread = kner.load(path)
    expected = [one_thread.predict([t]) for t in texts]
    tagger = kner.load(path)
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda t: tagger.predict([t]), texts))
    assert got == expected
    rows = tagger._extra_rows
    table = tagger.net.morph.num_embeddings
    assert rows and sorted(rows.values()) == list(range(table, table + len(rows)))
    assert tagger._extra_vectors.shape == (len(rows), 4)


def test_a_loaded_model_runs_on_the_machines_threads_not_the_training_runs(tmp_path, overfit_examples):
    path = BiLSTMCRFTagger(**TINY, max_epochs=1).fit(overfit_examples).save(tmp_path / "model")  # num_threads=1
    assert kner.load(path).config.num_threads == 0
    assert kner.load(path, num_threads=1).config.num_threads == 1


def _interrupt_after(monkeypatch, epoch):
    original = BiLSTMCRFTagger._checkpoint

    def checkpoint_then_die(self, path, at_epoch, *args):
        original(self, path, at_epoch, *args)
        if at_epoch == epoch:
            raise KeyboardInterrupt

    monkeypatch.setattr(BiLSTMCRFTagger, "_checkpoint", checkpoint_then_die)


@pytest.mark.parametrize("ema", [0.0, 0.9])
def test_resumed_training_equals_uninterrupted_training(tmp_path, overfit_examples, monkeypatch, ema):
    train, dev = overfit_examples, overfit_examples[:3]
    cfg = dict(TINY, max_epochs=5, patience=5, ema=ema)
    straight = BiLSTMCRFTagger(**cfg, checkpoint_dir=str(tmp_path / "a")).fit(train, dev)

    with monkeypatch.context() as m:
        _interrupt_after(m, epoch=2)
        with pytest.raises(KeyboardInterrupt):
            BiLSTMCRFTagger(**cfg, checkpoint_dir=str(tmp_path / "b")).fit(train, dev)
    resumed = BiLSTMCRFTagger(**cfg, checkpoint_dir=str(tmp_path / "b"), resume=True)
    resumed.fit(train, dev)

    assert [r.valid_f1 for r in resumed.history] == [r.valid_f1 for r in straight.history]
    assert [r.train_loss for r in resumed.history] == [r.train_loss for r in straight.history]
    for (name, a), (_, b) in zip(straight.net.state_dict().items(), resumed.net.state_dict().items()):
        assert torch.equal(a, b), name
    texts = [ex.text for ex in train] + ODD_TEXTS
    assert resumed.predict(texts) == straight.predict(texts)


def test_an_interrupted_refit_resumes_from_its_own_checkpoints_to_the_same_model(tmp_path, overfit_examples,
                                                                                  monkeypatch, caplog):
    train, valid = overfit_examples, overfit_examples[:3]  # seen in training, so validation F1 climbs
    cfg = dict(TINY, lr=0.1, max_epochs=8, patience=8, checkpoint_dir=str(tmp_path / "run"))
    chosen = BiLSTMCRFTagger(**cfg).fit(train, valid)
    straight = refit(chosen, train, valid)
    assert straight.refit_epochs >= 3  # so the interruption below falls inside the refit

    with monkeypatch.context() as m:
        _interrupt_after(m, epoch=2)
        with pytest.raises(KeyboardInterrupt):
            refit(chosen, train, valid)
    # kner train --resume: the finished first run resumes to its end, then the refit from its own checkpoint
    with caplog.at_level("INFO", logger="kner"):
        resumed = refit(BiLSTMCRFTagger(**cfg, resume=True).fit(train, valid), train, valid)

    refit_ckpt = tmp_path / "run" / "refit" / bilstm_crf.CHECKPOINT_FILE
    assert f"resumed from {refit_ckpt} after epoch 2" in caplog.text  # continued, not started over
    assert len(resumed.history) == len(straight.history) == straight.refit_epochs
    assert [r.train_loss for r in resumed.history] == [r.train_loss for r in straight.history]
    for (name, a), (_, b) in zip(straight.net.state_dict().items(), resumed.net.state_dict().items()):
        assert torch.equal(a, b), name


def test_weight_averaging_keeps_the_average_of_the_same_training_trajectory(overfit_examples):
    live = BiLSTMCRFTagger(**TINY, max_epochs=2).fit(overfit_examples)
    tracking = BiLSTMCRFTagger(**TINY, max_epochs=2, ema=1e-9).fit(overfit_examples)  # average = last step
    averaged = BiLSTMCRFTagger(**TINY, max_epochs=2, ema=0.9).fit(overfit_examples)
    trained = [k for k, p in live.net.named_parameters() if p.requires_grad]
    weights = [m.net.state_dict() for m in (live, tracking, averaged)]
    assert all(torch.allclose(weights[0][k], weights[1][k], atol=1e-6) for k in trained)
    assert not any(torch.allclose(weights[0][k], weights[2][k], atol=1e-3) for k in trained)


def test_resume_refuses_a_checkpoint_written_with_other_settings(tmp_path, overfit_examples):
    BiLSTMCRFTagger(**TINY, max_epochs=1, checkpoint_dir=str(tmp_path)).fit(overfit_examples)
    other = BiLSTMCRFTagger(**{**TINY, "hidden": 8}, max_epochs=2, checkpoint_dir=str(tmp_path), resume=True)
    with pytest.raises(ValueError, match="hidden"):
        other.fit(overfit_examples)
    with pytest.raises(ValueError, match="checkpoint_dir"):
        BiLSTMCRFTagger(**TINY, resume=True).fit(overfit_examples)


def test_resume_accepts_a_checkpoint_from_before_a_setting_existed_when_it_is_at_its_default(
        tmp_path, overfit_examples, monkeypatch):
    with monkeypatch.context() as m:
        _interrupt_after(m, epoch=1)
        with pytest.raises(KeyboardInterrupt):
            BiLSTMCRFTagger(**TINY, max_epochs=2, checkpoint_dir=str(tmp_path)).fit(overfit_examples)
    blob = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    del blob["config"]["ema"]  # as written by a kner without the setting
    torch.save(blob, tmp_path / "checkpoint.pt")
    resumed = BiLSTMCRFTagger(**TINY, max_epochs=2, checkpoint_dir=str(tmp_path), resume=True).fit(overfit_examples)
    assert [r.epoch for r in resumed.history] == [1, 2]
    with pytest.raises(ValueError, match="ema"):
        BiLSTMCRFTagger(**TINY, max_epochs=2, ema=0.9, checkpoint_dir=str(tmp_path), resume=True).fit(overfit_examples)


def test_a_model_saved_before_the_gazetteer_features_loads_without_them(tmp_path, overfit_examples):
    tagger = BiLSTMCRFTagger(**TINY, gazetteer_dim=0, max_epochs=1).fit(overfit_examples)
    directory = tagger.save(tmp_path / "model")
    meta = json.loads((directory / "kner.json").read_text(encoding="utf-8"))
    del meta["config"]["gazetteer_dim"]  # as written by a kner without the setting
    (directory / "kner.json").write_text(json.dumps(meta), encoding="utf-8")
    loaded = kner.load(directory)
    assert loaded.config.gazetteer_dim == 0 and loaded.gazetteer is None
    assert loaded.predict(ODD_TEXTS) == tagger.predict(ODD_TEXTS)


def test_a_model_whose_files_hold_fields_this_kner_lacks_is_refused_in_one_line(tmp_path, overfit_examples):
    directory = BiLSTMCRFTagger(**TINY, max_epochs=1).fit(overfit_examples).save(tmp_path / "model")
    vocab = json.loads((directory / "vocab.json").read_text(encoding="utf-8"))
    (directory / "vocab.json").write_text(json.dumps({**vocab, "subwords": []}), encoding="utf-8")  # a later kner's field
    with pytest.raises(kner.models.ModelDirError, match=r"cannot read \(saved by kner .*; retrain it\): .*'subwords'"):
        kner.load(directory)


def test_every_input_feature_trains_saves_and_loads(tmp_path, overfit_examples):
    tagger = BiLSTMCRFTagger(**{**TINY, "kiwi_vectors": 8, "kiwi_vocab": 200}, jamo_dim=4, kiwi_dim=4,
                             pretrained_init=True, layers=2, max_epochs=2)
    tagger.fit(overfit_examples, valid=overfit_examples)
    assert [r.epoch for r in tagger.history] == [1, 2]
    assert all(0.0 <= r.valid_f1 <= 1.0 and r.seconds > 0 for r in tagger.history)
    loaded = kner.load(tagger.save(tmp_path / "model"))
    assert loaded.predict(ODD_TEXTS) == tagger.predict(ODD_TEXTS)


def test_gazetteer_features_mark_dictionary_names_and_the_table_travels_with_the_model(tmp_path, monkeypatch,
                                                                                      overfit_examples):
    table = {"이순신": "Q5", "서울시청": "Q", "부산": "NNP"}
    monkeypatch.setattr(bilstm_crf, "from_kiwi", lambda *a: table)  # the real dictionaries: tests/test_gazetteer.py
    tagger = BiLSTMCRFTagger(**TINY, gazetteer_dim=4, max_epochs=2).fit(overfit_examples)
    text = "부산의 이순신"
    marked = [tagger.vocab.gaz[i - 1] if i else "O" for i in tagger._encode([text])[0][:, GAZ].tolist()]
    assert marked == ["B-NNP", "I-NNP", "O", "O", "B-Q5", "I-Q5", "I-Q5"]
    assert tagger.net.gaz.weight.shape == (1 + 2 * 3, 4)  # B- and I- of each of the table's classes
    monkeypatch.setattr(bilstm_crf, "from_kiwi", lambda *a: pytest.fail("loading read the dictionaries"))
    loaded = kner.load(tagger.save(tmp_path / "model"))
    assert loaded.gazetteer.table == table
    assert loaded.predict(ODD_TEXTS + [text]) == tagger.predict(ODD_TEXTS + [text])


def test_lexicon_features_mark_kiwi_forms_and_the_table_travels_with_the_model(tmp_path, monkeypatch,
                                                                            overfit_examples):
    table = {"부산": "NNP", "의": "J", "이순": "NNG|NNP"}
    monkeypatch.setattr(bilstm_crf, "lexicon_from_kiwi", lambda: table)  # Kiwi's own list: tests/test_gazetteer.py
    tagger = BiLSTMCRFTagger(**TINY, lexicon_dim=4, max_epochs=2).fit(overfit_examples)
    text = "부산의 이순신!"
    marked = [tagger.vocab.lex[i - 1] if i else "O" for i in tagger._encode([text])[0][:, LEX].tolist()]
    assert marked == ["B-NNP", "I-NNP", "B-J", "O", "B-NNG|NNP", "I-NNG|NNP", "U", "O"]
    assert tagger.net.lex.weight.shape == (1 + 1 + 2 * 3, 4)  # padding/O, U, and B- and I- of each class
    monkeypatch.setattr(bilstm_crf, "lexicon_from_kiwi", lambda: pytest.fail("loading read Kiwi's lexicon"))
    loaded = kner.load(tagger.save(tmp_path / "model"))
    assert loaded.lexicon.table == table
    assert loaded.predict(ODD_TEXTS + [text]) == tagger.predict(ODD_TEXTS + [text])


def test_encoder_features_train_and_the_encoder_travels_with_the_model(tmp_path, request, overfit_examples):
    from builders.bert import base_model

    tagger = BiLSTMCRFTagger(**{**TINY, "dropout": 0.0}, encoder=str(base_model(request, "sentencepiece")),
                             encoder_layers=2, max_epochs=40, patience=40)
    tagger.fit(overfit_examples, valid=overfit_examples)
    texts = [ex.text for ex in overfit_examples]
    assert tagger.predict(texts) == [sorted(ex.spans) for ex in overfit_examples]
    assert tagger.net.context_mix.shape == (2,) and tagger.net.context_mix.grad is not None  # the mix is learned
    directory = tagger.save(tmp_path / "model")
    meta = json.loads((directory / "kner.json").read_text(encoding="utf-8"))
    meta["config"]["encoder"] = str(tmp_path / "gone")  # loading reads the copy in the model, not the source
    (directory / "kner.json").write_text(json.dumps(meta), encoding="utf-8")
    loaded = kner.load(directory)
    assert loaded.predict(ODD_TEXTS + texts) == tagger.predict(ODD_TEXTS + texts)


def test_a_cut_encoder_with_normalized_features_saves_and_reloads_both(tmp_path, request, overfit_examples):
    from builders.bert import base_model

    tagger = BiLSTMCRFTagger(**TINY, encoder=str(base_model(request, "sentencepiece")), encoder_layers=1,
                             encoder_depth=1, encoder_norm=True, max_epochs=1).fit(overfit_examples)
    assert tagger.context.normalize
    directory = tagger.save(tmp_path / "model")
    saved = json.loads((directory / "encoder" / "config.json").read_text(encoding="utf-8"))
    assert saved["num_hidden_layers"] == 1 and tagger.context.layers == [1]
    texts, loaded = ODD_TEXTS + [ex.text for ex in overfit_examples], kner.load(directory)
    assert loaded.context.normalize and loaded.predict(texts) == tagger.predict(texts)


def test_the_networks_initial_weights_do_not_depend_on_random_numbers_the_encoder_draws(request, monkeypatch,
                                                                                        overfit_examples):
    from builders.bert import base_model

    from kner.models.context_features import ContextEncoder

    def fit():
        tagger = BiLSTMCRFTagger(**TINY, encoder=str(base_model(request, "sentencepiece")), encoder_layers=1, max_epochs=1)
        return tagger.fit(overfit_examples).net.state_dict()

    plain = fit()
    load = ContextEncoder.from_pretrained.__func__

    def drawing(cls, *args, **kwargs):  # as a checkpoint without its pooler initialises one
        torch.rand(1000)
        return load(cls, *args, **kwargs)

    monkeypatch.setattr(ContextEncoder, "from_pretrained", classmethod(drawing))
    assert all(torch.equal(a, b) for a, b in zip(plain.values(), fit().values()))


def test_a_gemma_encoder_read_twice_is_trimmed_saved_and_reloaded_with_its_settings(tmp_path, request, overfit_examples):
    from builders.bert import base_model

    source = base_model(request, "gemma")
    tagger = BiLSTMCRFTagger(**TINY, encoder=str(source), encoder_layers=2, encoder_norm=True, encoder_echo=True,
                             max_epochs=1).fit(overfit_examples)
    assert tagger.context.echo and tagger.context.normalize
    directory = tagger.save(tmp_path / "model")
    saved = json.loads((directory / "encoder" / "config.json").read_text(encoding="utf-8"))
    assert saved["vocab_size"] < json.loads((source / "config.json").read_text(encoding="utf-8"))["vocab_size"]
    texts, loaded = ODD_TEXTS + [ex.text for ex in overfit_examples], kner.load(directory)
    assert loaded.context.echo and loaded.predict(texts) == tagger.predict(texts)


def test_two_encoders_each_get_a_learned_mix_and_both_travel_with_the_model(tmp_path, request, overfit_examples):
    from builders.bert import base_model

    tagger = BiLSTMCRFTagger(**{**TINY, "dropout": 0.0}, encoder=str(base_model(request, "gemma")),
                             encoder2=str(base_model(request, "sentencepiece")), encoder_layers=2, encoder_norm=True,
                             max_epochs=40, patience=40)
    tagger.fit(overfit_examples, valid=overfit_examples)
    texts = [ex.text for ex in overfit_examples]
    assert tagger.predict(texts) == [sorted(ex.spans) for ex in overfit_examples]
    assert tagger.net.context_dims == [tagger.context.dim, tagger.context2.dim]
    assert all(mix.shape == (2,) and mix.grad is not None for mix in (tagger.net.context_mix, tagger.net.context2_mix))
    directory = tagger.save(tmp_path / "model")
    assert (directory / "encoder" / "config.json").is_file() and (directory / "encoder2" / "config.json").is_file()
    meta = json.loads((directory / "kner.json").read_text(encoding="utf-8"))
    meta["config"]["encoder"] = meta["config"]["encoder2"] = str(tmp_path / "gone")  # the copies are read
    (directory / "kner.json").write_text(json.dumps(meta), encoding="utf-8")
    loaded = kner.load(directory)
    assert loaded.context2.normalize and loaded.predict(ODD_TEXTS + texts) == tagger.predict(ODD_TEXTS + texts)


def test_a_second_encoder_without_a_first_is_refused_with_the_fix():
    with pytest.raises(ValueError, match="set encoder too"):
        BiLSTMCRFTagger(encoder2="some/encoder")


def test_a_model_without_the_lexicon_saves_the_vocabulary_it_saved_before(tmp_path, overfit_examples):
    tagger = BiLSTMCRFTagger(**TINY, max_epochs=1).fit(overfit_examples)
    saved = json.loads((tagger.save(tmp_path / "model") / "vocab.json").read_text(encoding="utf-8"))
    assert set(saved) == {"chars", "bigrams", "pos", "morphemes", "kiwi_model", "gaz"}  # earlier kner reads it


def test_bf16_inference_on_cpu_keeps_a_confident_models_exact_spans(tmp_path, overfit_examples):
    from builders.bilstm_crf import make

    tagger = make(tmp_path, None).fit(overfit_examples)
    texts = [ex.text for ex in overfit_examples]
    assert tagger.predict(texts) == [sorted(ex.spans) for ex in overfit_examples]
    x, lengths = tagger._pad(tagger._encode(texts))
    with torch.inference_mode(), autocast(torch.device("cpu"), "bf16"):
        assert tagger.net.emissions(x, lengths).dtype == torch.bfloat16
    path = tagger.save(tmp_path / "model")
    bf16 = kner.load(path, precision="bf16")
    assert bf16.config.precision == "bf16" and kner.load(path).config.precision == "auto"
    assert bf16.predict(texts) == [sorted(ex.spans) for ex in overfit_examples]
    with pytest.raises(ValueError, match="needs a GPU"):
        kner.load(path, precision="fp16").predict(texts)
    with pytest.raises(ValueError, match="no setting 'precison'"):
        kner.load(path, precison="bf16")


def test_a_recall_bias_trades_precision_for_recall_and_is_a_load_time_setting(tmp_path, overfit_examples):
    from builders.bilstm_crf import make

    path = make(tmp_path, None).fit(overfit_examples).save(tmp_path / "model")
    texts = [ex.text for ex in overfit_examples]
    plain = kner.load(path).predict(texts)
    assert plain == [sorted(ex.spans) for ex in overfit_examples]
    assert kner.load(path, recall_bias=0.0).predict(texts) == plain
    covered = lambda preds: sum(s.end - s.start for spans in preds for s in spans)  # noqa: E731
    biased = [kner.load(path, recall_bias=b).predict(texts) for b in (0.5, 5.0, 1e4)]
    assert covered(plain) <= covered(biased[0]) <= covered(biased[1]) <= covered(biased[2])
    # Nothing outscores O's loss of 1e4: every character ends up inside some entity.
    assert covered(plain) < covered(biased[2]) == sum(map(len, texts))
    assert kner.load(path, recall_bias=0.5).config.recall_bias == 0.5 and kner.load(path).config.recall_bias == 0


def test_bad_settings_and_labels_get_clear_errors(overfit_examples):
    with pytest.raises(ValueError, match="device"):
        BiLSTMCRFTagger(device="tpu")
    with pytest.raises(ValueError, match="precision"):
        BiLSTMCRFTagger(precision="int4")
    with pytest.raises(ValueError, match=r"ema is a decay in \[0, 1\)"):
        BiLSTMCRFTagger(ema=1.0)
    with pytest.raises(ValueError, match="recall_bias must be a finite number"):
        BiLSTMCRFTagger(recall_bias=float("nan"))
    with pytest.raises(ValueError, match="XX"):
        BiLSTMCRFTagger(**TINY, max_epochs=1).fit([kner.Example("가나다", (kner.Span(0, 2, "XX"),))])
    with pytest.raises(RuntimeError, match="not trained"):
        BiLSTMCRFTagger().predict(["이순신"])
    with pytest.raises(ValueError, match="kiwi_vocab must be 0 to"):
        BiLSTMCRFTagger(**{**TINY, "kiwi_vocab": 10**8}, max_epochs=1).fit(overfit_examples)


def test_loading_with_another_kiwi_model_warns_that_morpheme_ids_differ(tmp_path, overfit_examples, caplog):
    import json

    tagger = BiLSTMCRFTagger(**TINY, max_epochs=1).fit(overfit_examples)
    path = tagger.save(tmp_path / "model")
    vocab = json.loads((path / "vocab.json").read_text(encoding="utf-8"))
    assert vocab["kiwi_model"] and 100 < len(vocab["morphemes"])  # Kiwi's first 100 ids and training's
    kner.load(path)
    assert "Kiwi model" not in caplog.text
    (path / "vocab.json").write_text(json.dumps({**vocab, "kiwi_model": "0.0.1"}), encoding="utf-8")
    kner.load(path)
    assert "trained with Kiwi model 0.0.1" in caplog.text and "install kiwipiepy_model==0.0.1" in caplog.text


def test_a_model_trained_with_device_cuda_loads_on_a_machine_without_a_gpu(tmp_path, overfit_examples):
    import json

    tagger = BiLSTMCRFTagger(**TINY, max_epochs=1).fit(overfit_examples)
    path = tagger.save(tmp_path / "model")
    meta = json.loads((path / "kner.json").read_text(encoding="utf-8"))
    meta["config"]["device"] = "cuda"  # as `kner train --device cuda` on a GPU machine writes it
    (path / "kner.json").write_text(json.dumps(meta), encoding="utf-8")
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    loaded = kner.load(path)
    assert loaded.device.type == "cpu" and loaded.predict(ODD_TEXTS) == tagger.predict(ODD_TEXTS)
    with pytest.raises(ValueError, match="sees no GPU"):
        kner.load(path, device="cuda")  # asked for explicitly, it is refused with the fix


def test_a_run_with_a_feature_cache_trains_the_same_model_again_without_running_the_encoder(tmp_path, request,
                                                                                            monkeypatch,
                                                                                            overfit_examples):
    from builders.bert import base_model

    from kner.models.context_features import ContextEncoder

    def fit():
        return BiLSTMCRFTagger(**TINY, encoder=str(base_model(request, "sentencepiece")), encoder_layers=2,
                               max_epochs=2, feature_cache=str(tmp_path / "cache")).fit(overfit_examples[:3],
                                                                                       overfit_examples[3:])

    first = fit()
    stored = sorted(tmp_path.glob("cache/*/*.pt"))
    assert len(stored) == 2  # the training texts and the validation texts
    texts = ODD_TEXTS + [ex.text for ex in overfit_examples]
    assert first.predict(texts) and sorted(tmp_path.glob("cache/*/*.pt")) == stored  # prediction writes nothing
    monkeypatch.setattr(ContextEncoder, "_features", lambda *a: pytest.fail("the encoder ran despite the cache"))
    again = fit()
    assert [(r.train_loss, r.valid_f1) for r in again.history] == [(r.train_loss, r.valid_f1) for r in first.history]
    assert all(torch.equal(a, b) for a, b in zip(first.net.state_dict().values(), again.net.state_dict().values()))
    plain = BiLSTMCRFTagger(**{**dataclasses.asdict(again.config), "feature_cache": None})
    assert learned_config(plain) == learned_config(again)  # so --resume may add or drop the cache
