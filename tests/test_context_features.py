"""Frozen encoder features per character: layer choice, alignment to characters, batch independence."""
from __future__ import annotations

import json

import pytest
import torch

from builders.bert import base_model
from kner.models.context_features import ContextEncoder, layer_numbers

pytestmark = pytest.mark.slow  # builds a tiny encoder


def test_layers_are_spread_evenly_and_end_at_the_last():
    assert layer_numbers(12, 3) == [4, 8, 12]
    assert layer_numbers(12, 4) == [3, 6, 9, 12]
    assert layer_numbers(2, 1) == [2]
    for wanted in (0, 13):
        with pytest.raises(ValueError, match="encoder_layers must be between 1 and the encoder's 12 layers"):
            layer_numbers(12, wanted)


@pytest.fixture(scope="module")
def encoder(request):
    return ContextEncoder.from_pretrained(base_model(request, "sentencepiece"), layers=2)


def test_each_character_gets_its_subwords_hidden_states_and_a_space_gets_zeros(encoder):
    text = "이순신 장군은 서울에 갔다"
    (feats,) = encoder.features([text], "fp32")
    assert feats.shape == (len(text), 2, encoder.dim) and feats.dtype == torch.float16
    (enc,) = encoder.windows.encode([text])
    ids = torch.tensor([encoder.windows.window_ids(enc, 0)])
    states = encoder.model(input_ids=ids, output_hidden_states=True).hidden_states
    skip = len(encoder.windows.prefix)
    for t, (a, b) in enumerate(enc.offsets):
        expected = torch.stack([states[k][0, skip + t] for k in encoder.layers]).half()
        assert torch.equal(feats[a:b], expected.expand(b - a, -1, -1))
    spaces = [i for i, c in enumerate(text) if c == " "]
    assert not feats[spaces].any() and all(feats[i].any() for i in range(len(text)) if i not in spaces)


def test_a_texts_features_do_not_depend_on_its_batch_and_a_long_text_is_covered_by_windows(encoder):
    short, long = "부산의 이순신", "가나다 서울 " * 60
    alone = encoder.features([short], "fp32")[0]
    together = encoder.features([long, short], "fp32")
    assert torch.allclose(together[1].float(), alone.float(), atol=1e-3)  # padding is masked out
    assert len(encoder.windows.encode([long])[0].wins) > 1
    assert all(together[0][i].any() for i, c in enumerate(long) if c != " ")


@pytest.mark.parametrize("kind", ["sentencepiece", "gemma"])
def test_trimming_keeps_the_training_texts_features_and_still_reads_any_text(request, tmp_path, kind, klue_text_slice):
    texts = klue_text_slice[:20]
    full = ContextEncoder.from_pretrained(base_model(request, kind), layers=2)
    before = full.features(texts + ["漢字 テスト ABC"], "fp32")
    trimmed = ContextEncoder.from_pretrained(base_model(request, kind), layers=2).trimmed_to(texts)
    assert trimmed.model.get_input_embeddings().num_embeddings < full.model.get_input_embeddings().num_embeddings
    assert type(trimmed.model.get_input_embeddings()) is type(full.model.get_input_embeddings())  # Gemma's scales
    after = trimmed.features(texts + ["漢字 テスト ABC"], "fp32")
    assert all(torch.equal(a, b) for a, b in zip(after[:-1], before[:-1]))
    assert after[-1].shape == before[-1].shape and after[-1].any()
    trimmed.save(tmp_path)
    reloaded = ContextEncoder.load(tmp_path, layers=2).features(texts + ["漢字 テスト ABC"], "fp32")
    assert all(torch.equal(a, b) for a, b in zip(reloaded, after))


def test_a_trimmed_bpe_keeps_the_tokens_its_kept_tokens_are_merged_from(request, klue_text_slice):
    from transformers import AutoTokenizer

    from kner.models import vocab_trim

    tokenizer = AutoTokenizer.from_pretrained(base_model(request, "gemma"))
    merges = json.loads(tokenizer.backend_tokenizer.to_str())["model"]["merges"]
    keep = vocab_trim.kept_ids(tokenizer, {i for ids in tokenizer(klue_text_slice[:20])["input_ids"] for i in ids})
    pieces = set(tokenizer.convert_ids_to_tokens(keep))
    assert any(len(a) > 1 or len(b) > 1 for a, b in merges if a + b in pieces)  # some kept token is built so
    for a, b in merges:
        if a + b in pieces:
            assert {a, b} <= pieces
    assert {f"<0x{b:02X}>" for b in range(256)} <= pieces
    assert len(keep) < len(tokenizer)


def test_an_encoder_folder_that_does_not_exist_is_named_in_one_line(tmp_path):
    with pytest.raises(ValueError, match=f"model folder {tmp_path / 'e5'} does not exist; give a Hugging Face"):
        ContextEncoder.from_pretrained(tmp_path / "e5", layers=3)


def test_a_cut_encoder_reads_its_first_layers_as_the_whole_one_does_and_saves_only_those(request, tmp_path):
    text = "이순신 장군은 서울에 갔다"
    full = ContextEncoder.from_pretrained(base_model(request, "sentencepiece"), layers=2)  # layers 1 and 2
    cut = ContextEncoder.from_pretrained(base_model(request, "sentencepiece"), layers=1, depth=1)
    assert cut.layers == [1] and cut.model.config.num_hidden_layers == 1
    assert torch.equal(cut.features([text], "fp32")[0][:, 0], full.features([text], "fp32")[0][:, 0])
    cut.save(tmp_path)
    assert ContextEncoder.load(tmp_path, layers=1).model.config.num_hidden_layers == 1
    with pytest.raises(ValueError, match="encoder_depth must be between 1 and the encoder's 2 layers, not 3"):
        ContextEncoder.from_pretrained(base_model(request, "sentencepiece"), layers=1, depth=3)


def test_normalized_features_have_unit_rms_per_vector_and_spaces_stay_zero(request):
    text = "이순신 장군은 서울에 갔다"
    encoder = ContextEncoder.from_pretrained(base_model(request, "sentencepiece"), layers=2, normalize=True)
    (feats,) = encoder.features([text], "fp32")
    rms = feats.float().pow(2).mean(-1).sqrt()  # (chars, layers)
    spaces = [i for i, c in enumerate(text) if c == " "]
    assert not feats[spaces].any()
    assert torch.allclose(rms[[i for i in range(len(text)) if i not in spaces]], torch.ones(1), atol=1e-2)


def test_a_decoders_vectors_see_only_the_text_before_them_unless_it_reads_the_text_twice(request):
    a, b = "이순신 장군은 서울에 갔다", "이순신 장군은 부산에 왔다"
    shared = len("이순신 장군은 ")
    once = ContextEncoder.from_pretrained(base_model(request, "gemma"), layers=2)
    fa, fb = once.features([a, b], "fp32")
    assert torch.equal(fa[:shared], fb[:shared])
    twice = ContextEncoder.from_pretrained(base_model(request, "gemma"), layers=2, echo=True)
    ea, eb = twice.features([a, b], "fp32")
    assert not torch.equal(ea[:shared], eb[:shared])
    (enc,) = twice.windows.encode([a])  # each subword's states come from the second reading
    ids = twice.windows.prefix + enc.ids + enc.ids
    states = twice.model(input_ids=torch.tensor([ids]), output_hidden_states=True).hidden_states
    second = len(twice.windows.prefix) + len(enc.ids)
    last = {start: t for t, (start, _) in enumerate(enc.offsets)}  # a character's byte tokens: the last one's
    for start, t in last.items():
        expected = torch.stack([states[k][0, second + t] for k in twice.layers]).half()
        assert torch.allclose(ea[start].float(), expected.float(), atol=1e-3)


def test_a_text_read_twice_still_fits_the_window_and_is_covered_whole(request):
    long = "가나다 서울 " * 300
    twice = ContextEncoder.from_pretrained(base_model(request, "gemma"), layers=1, echo=True)
    once = ContextEncoder.from_pretrained(base_model(request, "gemma"), layers=1)
    assert 2 * twice.windows.size + len(twice.windows.prefix) <= once.windows.size + len(once.windows.prefix)
    (enc,) = twice.windows.encode([long])
    assert len(enc.wins) > 1 and all(len(twice._sequence(enc, w)) <= 512 for w in range(len(enc.wins)))
    (feats,) = twice.features([long], "fp32")
    assert all(feats[i].any() for i, c in enumerate(long) if c != " ")


def test_a_bf16_checkpoint_runs_in_bf16_only_when_read_in_bf16_and_is_saved_back_in_bf16(request, tmp_path):
    from safetensors import safe_open
    from transformers import AutoModel, AutoTokenizer

    source = base_model(request, "gemma")
    AutoModel.from_pretrained(source).to(torch.bfloat16).save_pretrained(tmp_path / "bf16")  # as gemma-3-270m ships
    AutoTokenizer.from_pretrained(source).save_pretrained(tmp_path / "bf16")
    encoder = ContextEncoder.from_pretrained(tmp_path / "bf16", layers=2, normalize=True)
    assert {p.dtype for p in encoder.model.parameters()} == {torch.float32}
    texts = ["이순신 장군은 서울에 갔다", "1592년 한산도"]
    before = encoder.features(texts, "fp32")
    encoder.save(tmp_path / "run")
    with safe_open(tmp_path / "run" / "encoder" / "model.safetensors", "pt") as saved:
        assert {saved.get_tensor(k).dtype for k in saved.keys()} == {torch.bfloat16}
    again = ContextEncoder.load(tmp_path / "run", layers=2, normalize=True)
    assert {p.dtype for p in again.model.parameters()} == {torch.float32}
    assert all(torch.equal(a, b) for a, b in zip(again.features(texts, "fp32"), before))
    in_bf16 = again.features(texts, "bf16")
    assert {p.dtype for p in again.model.parameters()} == {torch.bfloat16}
    assert not all(torch.equal(a, b) for a, b in zip(in_bf16, before))
    assert all(torch.equal(a, b) for a, b in zip(again.features(texts, "fp32"), before))  # and back, exactly
    assert {p.dtype for p in again.model.parameters()} == {torch.float32}


def test_cached_features_are_the_computed_ones_and_only_texts_the_cache_lacks_are_computed(encoder, tmp_path,
                                                                                           monkeypatch):
    texts = ["이순신 장군은 서울에 갔다", "부산의 이순신", "가나다 서울 " * 60]
    computed = []
    compute = encoder._features
    monkeypatch.setattr(encoder, "_features", lambda t, p: computed.append(list(t)) or compute(t, p))
    first = encoder.features(texts, "fp32", tmp_path)
    assert all(torch.equal(a, b) for a, b in zip(first, compute(texts, "fp32")))
    again = encoder.features(["오늘 부산에서", texts[1], "오늘 부산에서", texts[0]], "fp32", tmp_path)
    assert computed == [texts, ["오늘 부산에서"]]  # each text once, the stored ones never
    assert torch.equal(again[1], first[1]) and torch.equal(again[3], first[0]) and torch.equal(again[0], again[2])
    assert len(list(tmp_path.glob("*/*.pt"))) == 2 and not list(tmp_path.glob("*/*.tmp"))


def test_cached_features_are_kept_apart_by_precision_layers_vocabulary_and_the_encoders_files(request, tmp_path, monkeypatch):
    source = tmp_path / "encoder"
    ContextEncoder.from_pretrained(base_model(request, "sentencepiece"), layers=2).save(tmp_path, "encoder")
    computed = []

    def reading(layers, trimmed_to=None):
        enc = ContextEncoder.from_pretrained(source, layers=layers)
        enc = enc.trimmed_to(trimmed_to) if trimmed_to else enc
        compute = enc._features
        monkeypatch.setattr(enc, "_features", lambda t, p: computed.append(p) or compute(t, p))
        return enc

    texts = ["이순신 장군은 서울에 갔다"]
    for layers, precision in [(2, "fp32"), (2, "fp32"), (2, "bf16"), (1, "fp32")]:
        reading(layers).features(texts, precision, tmp_path / "cache")
    assert computed == ["fp32", "bf16", "fp32"]  # the second read was found; each other setting misses
    for train in (texts, texts, ["오늘 부산에서 이순신"]):  # trimmed to other training texts, a vocabulary differs
        reading(2, train).features(texts, "fp32", tmp_path / "cache")
    assert computed == ["fp32", "bf16", "fp32", "fp32", "fp32"]
    config = json.loads((source / "config.json").read_text(encoding="utf-8"))
    (source / "config.json").write_text(json.dumps({**config, "layer_norm_eps": 1e-5}), encoding="utf-8")
    reading(2).features(texts, "fp32", tmp_path / "cache")
    assert computed == ["fp32", "bf16", "fp32", "fp32", "fp32", "fp32"]  # a changed encoder file misses too


def test_an_interrupted_cache_write_leaves_no_file_behind(encoder, tmp_path, monkeypatch):
    from kner.models import feature_cache

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(feature_cache.torch, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        encoder.features(["부산의 이순신"], "fp32", tmp_path)
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []
