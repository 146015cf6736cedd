"""The HF-encoder family: alignment through real WordPiece and SentencePiece tokenizers, windows,
training labels, best-epoch selection, the saved folder, and data-parallel training."""
from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModel, AutoModelForTokenClassification, AutoTokenizer

import kner
from builders import bert as builder
from conftest import ODD_TEXTS, OVERFIT, REPO, _ex
from kner.align import bio_labels, bridge_uncovered, piece_words, spans_to_bio, token_tags_from_chars
from kner.models.bert import IGNORE, BertTagger, Encoded, WindowEncoder, decode_spans
from kner.scoring import score
from kner.types import Example, Span

pytestmark = pytest.mark.slow  # trains neural models or starts servers: `pytest -m "not slow"` skips them

KINDS = ["wordpiece", "sentencepiece"]

TRICKY = [
    _ex("서울에서 부산까지 거리는 약 400㎞ 정도다.", ("서울", "LC"), ("부산", "LC"), ("약 400㎞", "QT")),
    _ex("Samsung Electronics 는 1969년 설립되었다.", ("Samsung Electronics", "OG"), ("1969년", "DT")),
    _ex("李舜臣 장군 😀 만세", ("李舜臣", "PS")),
    _ex("  앞뒤 공백과  두 칸   띄어쓰기 조선 시대  ", ("조선 시대", "DT")),
    _ex("5㎞를 3시간 만에 걸었다", ("5㎞", "QT"), ("3시간", "TI")),
]


def _long_example(parts: list[Example]) -> Example:
    """The parts joined by spaces into one text, spans shifted."""
    text, spans = "", []
    for ex in parts:
        spans += [Span(s.start + len(text), s.end + len(text), s.label) for s in ex.spans]
        text += ex.text + " "
    return Example(text, tuple(spans))


def _round_trip(encoder: WindowEncoder, examples: list[Example]) -> list[tuple[Example, list[Span], bool]]:
    """(example, spans after gold -> subword tags -> windows -> characters -> spans, whether every
    gold boundary falls on a subword boundary)."""
    out = []
    for ex, enc in zip(examples, encoder.encode([ex.text for ex in examples])):
        token_tags = token_tags_from_chars(spans_to_bio(ex.text, ex.spans), enc.offsets)
        window_tags = [token_tags[s:e] for s, e in enc.wins]
        starts = {s for s, e in enc.offsets if e > s}
        ends = {e for s, e in enc.offsets if e > s}
        aligned = all(sp.start in starts and sp.end in ends for sp in ex.spans)
        out.append((ex, decode_spans(ex.text, enc, window_tags), aligned))
    return out


@pytest.mark.parametrize("kind", KINDS)
def test_gold_spans_survive_subwords_and_windows_wherever_boundaries_are_on_subword_boundaries(kind, request,
                                                                                          klue_train_slice):
    tokenizer = AutoTokenizer.from_pretrained(builder.base_model(request, kind))
    encoder = WindowEncoder(tokenizer, max_length=24, stride=6)
    results = _round_trip(encoder, klue_train_slice[:400] + TRICKY)
    for ex, spans, aligned in results:
        if aligned:
            assert spans == sorted(ex.spans), ex.text
        else:  # a boundary inside a subword cannot be expressed: that entity comes back wrong
            assert spans != sorted(ex.spans)
    assert sum(aligned for _, _, aligned in results) > 0.8 * len(results)
    # A long text of aligned sentences, cut into many overlapping windows, comes back whole.
    long = _long_example([ex for ex, _, aligned in results if aligned][:40])
    [(_, spans, aligned)] = _round_trip(encoder, [long])
    assert aligned and spans == sorted(long.spans)
    assert len(encoder.encode([long.text])[0].wins) > 10


@pytest.mark.parametrize("kind", KINDS)
def test_tricky_texts_keep_their_entities_through_the_tokenizer(kind, request):
    encoder = WindowEncoder(AutoTokenizer.from_pretrained(builder.base_model(request, kind)), 24, 6)
    results = _round_trip(encoder, TRICKY)
    # The entities whose edges are subword edges in both tokenizers: spaces, Latin, Hanja, digits.
    for ex, spans, aligned in results[1:4]:
        assert aligned and spans == sorted(ex.spans), ex.text


def test_morpheme_pretokenization_puts_entity_boundaries_on_subword_boundaries(request, klue_train_slice):
    tokenizer = AutoTokenizer.from_pretrained(builder.base_model(request, "sentencepiece"))
    raw, split = WindowEncoder(tokenizer, 24, 6, pretokenize="none"), WindowEncoder(tokenizer, 24, 6)
    assert split.piece_tokenizer is not None  # auto: a SentencePiece tokenizer reads morphemes
    examples = klue_train_slice[:400] + TRICKY
    results = _round_trip(split, examples)
    for ex, spans, aligned in results:
        if aligned:
            assert spans == sorted(ex.spans), ex.text
    n_raw, n_split = (sum(aligned for _, _, aligned in _round_trip(e, examples)) for e in (raw, split))
    assert n_split >= n_raw and n_split > 0.97 * len(examples)  # the tiny vocabularies are mostly single syllables
    # Every subword indexes characters of one piece of its own text, whatever the text holds.
    texts = [ex.text for ex in examples] + ODD_TEXTS  # control characters, emoji, Hanja, kana, long
    for text, enc, pieces in zip(texts, split.encode(texts), split.pieces(texts)):
        assert all(text[s:e].strip() == text[s:e] != "" for s, e in pieces), text
        assert all(any(ps <= s and e <= pe for ps, pe in pieces) for s, e in enc.offsets if e > s), text
        assert not enc.ids or len(enc.ids) == len(enc.offsets)
    assert split.encode(["", "  "]) == [Encoded([], [], [])] * 2
    # Word starts keep their ▁, morphemes inside a word get none: 서울에서 -> ▁서울 | 에서.
    text = "서울에서 부산까지"
    enc = split.encode([text])[0]
    subwords = [(piece, text[s:e]) for piece, (s, e) in zip(tokenizer.convert_ids_to_tokens(enc.ids), enc.offsets)]
    assert all(piece.lstrip("▁") == chars for piece, chars in subwords if chars), subwords
    starts = [s for s, e in enc.offsets if e > s]
    assert [s for piece, (s, e) in zip(tokenizer.convert_ids_to_tokens(enc.ids), enc.offsets)
            if piece.startswith("▁") and e > s] == [0, 5]
    assert {0, 2, 5, 7} <= set(starts)  # 서울 | 에서 | 부산 | 까지


def test_wordpiece_tokenizers_read_raw_text_and_refuse_morphemes(request):
    tokenizer = AutoTokenizer.from_pretrained(builder.base_model(request, "wordpiece"))
    assert WindowEncoder(tokenizer, 24, 6).piece_tokenizer is None
    with pytest.raises(ValueError, match="pretokenize 'morphemes' needs a SentencePiece tokenizer"):
        WindowEncoder(tokenizer, 24, 6, pretokenize="morphemes")


def test_unknown_pieces_do_not_shift_offsets(request):
    tokenizer = AutoTokenizer.from_pretrained(builder.base_model(request, "wordpiece"))
    text = "😀 이순신 𠀀 장군 ☃"
    enc = WindowEncoder(tokenizer, 32, 8).encode([text])[0]
    pieces = tokenizer.convert_ids_to_tokens(enc.ids)
    assert pieces.count("[UNK]") >= 2
    for piece, (s, e) in zip(pieces, enc.offsets):
        assert text[s:e] == (text[s:e] if piece == "[UNK]" else piece.removeprefix("##"))
    assert [text[s:e] for piece, (s, e) in zip(pieces, enc.offsets) if piece == "[UNK]"][0] == "😀"


def test_sentencepiece_offsets_that_include_the_space_are_trimmed(request):
    tokenizer = AutoTokenizer.from_pretrained(builder.base_model(request, "sentencepiece"))
    text = "이순신 장군은 조선 시대의 명장이다."
    raw = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    assert any(text[s].isspace() for s, e in raw if e > s), "this tokenizer should report leading spaces"
    enc = WindowEncoder(tokenizer, 32, 8).encode([text])[0]
    assert all(not text[s].isspace() and not text[e - 1].isspace() for s, e in enc.offsets if e > s)


def test_an_entity_across_a_space_comes_back_whole():
    text = "조선 시대 서울 부산"
    offsets = [(0, 2), (3, 5), (6, 8), (9, 11)]
    tags = ["B-DT", "I-DT", "O", "I-DT", "I-DT", "O", "B-LC", "I-LC", "O", "B-LC", "I-LC"]
    bridged = bridge_uncovered(tags, offsets)
    assert bridged[2] == "I-DT"  # inside 조선 시대
    assert bridged[8] == "O"  # between two entities
    assert bridge_uncovered(["O", "O", "I-LC"], [(0, 1), (2, 3)]) == ["O", "O", "I-LC"]


# --- trained tiny models -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained(request, tmp_path_factory) -> BertTagger:
    """The WordPiece tagger of the contract test, fitted on the five OVERFIT sentences."""
    return builder.make(tmp_path_factory.mktemp("bert"), request).fit(OVERFIT)


def test_training_labels_ignore_special_and_whitespace_only_tokens(trained):
    items = trained._features([TRICKY[3], Example("가나 " * 40, (Span(0, 119, "PS"),))])
    tags = bio_labels()
    assert len(items) > 2  # the long text became several windows
    for item in items:
        assert len(item["input_ids"]) == len(item["labels"]) <= trained.config.max_length
        assert item["labels"][0] == IGNORE and item["labels"][-1] == IGNORE
    first = items[0]
    assert [tags[i] for i in first["labels"] if i != IGNORE][:2] == ["O", "O"]
    assert "B-DT" in [tags[i] for i in first["labels"] if i != IGNORE]


class Oracle(BertTagger):
    """Replaces only the network step (as an ONNX backend would): one-hot scores of the gold tag
    of each subword, looked up by the window's token ids, so predict must give back gold."""

    def __init__(self, tagger: BertTagger, examples: list[Example]) -> None:
        self.__dict__.update(tagger.__dict__)
        self.config = dataclasses.replace(tagger.config, predict_batch_size=4)  # many batches, sorted by length
        self.gold = {}
        for ex, enc in zip(examples, self.encoder.encode([ex.text for ex in examples])):
            tags = token_tags_from_chars(spans_to_bio(ex.text, ex.spans), enc.offsets)
            for w, (s, e) in enumerate(enc.wins):
                ids = self.encoder.window_ids(enc, w)
                lead = len(self.encoder.prefix)
                self.gold[tuple(ids)] = [0] * lead + [self.tags.index(t or "O") for t in tags[s:e]]

    def _logits(self, batch):
        out = np.zeros((*batch["input_ids"].shape, len(self.tags)), dtype=np.float32)  # (batch, seq, labels)
        for row, (ids, mask) in enumerate(zip(batch["input_ids"], batch["attention_mask"])):
            for i, k in enumerate(self.gold[tuple(ids[mask == 1].tolist())]):
                out[row, i, k] = 1.0
        return out


def test_long_texts_are_predicted_everywhere_across_windows_in_any_batch(trained):
    long = _long_example(OVERFIT * 30)
    also = [OVERFIT[0], _long_example(OVERFIT[1:] * 7)]
    oracle = Oracle(trained, [long, *also])
    assert len(trained.encoder.encode([long.text])[0].wins) > 20
    expected = [sorted(long.spans)] + [sorted(ex.spans) for ex in also]
    assert oracle.predict([long.text] + [ex.text for ex in also]) == expected


def test_prediction_is_the_same_in_any_batch_order(trained):
    texts = [ex.text for ex in OVERFIT] + [ex.text for ex in TRICKY]
    one_by_one = [trained.predict([t])[0] for t in texts]
    assert trained.predict(texts) == one_by_one
    assert trained.predict(texts[::-1]) == one_by_one[::-1]


def test_saved_folder_is_a_plain_hugging_face_model(trained, tmp_path):
    trained.save(tmp_path / "m")
    model = AutoModelForTokenClassification.from_pretrained(tmp_path / "m")
    assert [model.config.id2label[i] for i in range(13)] == bio_labels()
    assert AutoTokenizer.from_pretrained(tmp_path / "m").is_fast
    assert (tmp_path / "m" / "kner.json").is_file()


def test_xlmr_style_model_learns_exact_spans_and_keeps_its_best_epoch(request, tmp_path):
    tagger = builder.make(tmp_path, request, "sentencepiece", epochs=30)
    tagger.fit(OVERFIT, valid=OVERFIT)
    assert len(tagger.history) == 30 and all(r.valid_f1 is not None and r.train_loss > 0 for r in tagger.history)
    final = score(OVERFIT, tagger.predict([ex.text for ex in OVERFIT])).f1
    assert final == max(r.valid_f1 for r in tagger.history) == 1.0


def test_a_pretokenizing_model_learns_exact_spans_reloads_and_matches_the_pipeline_given_the_same_pieces(
        request, tmp_path):
    from kner.bert_speed import compare_with_pipeline

    tagger = builder.make(tmp_path, request, "sentencepiece", pretokenize="morphemes").fit(OVERFIT)
    texts = [ex.text for ex in OVERFIT]
    predicted = tagger.predict(texts)
    assert score(OVERFIT, predicted).f1 == 1.0
    tagger.save(tmp_path / "run")
    reloaded = kner.load(tmp_path / "run")
    assert reloaded.config.pretokenize == "morphemes" and reloaded.predict(texts) == predicted
    odd = reloaded.predict(ODD_TEXTS)
    assert len(odd) == len(ODD_TEXTS)
    assert all(0 <= sp.start < sp.end <= len(t) and t[sp.start:sp.end].strip() for t, spans in zip(ODD_TEXTS, odd) for sp in spans)
    result = compare_with_pipeline(reloaded, texts, pipeline_batch_sizes=(1,), repeats=1)
    assert result["n_equal_spans"] == result["n_comparable"] == result["n_texts"] >= 2, result["examples_differing"]


def test_pipeline_offsets_over_pre_split_words_map_back_to_the_text():
    from kner.bert_speed import pipeline_spans

    text = "김철수는  2019년 삼성전자에"
    pieces = [(0, 3), (3, 4), (6, 10), (10, 11), (12, 16), (16, 17)]
    joined = "".join(piece_words(text, pieces))  # " 김철수는 2019년 삼성전자에"
    entities = [{"start": joined.index(w) - lead, "end": joined.index(w) + len(w), "entity_group": label}
                for w, lead, label in [("김철수", 1, "PS"), ("2019년", 0, "DT"), ("삼성전자", 1, "OG")]]
    assert pipeline_spans(entities, text, pieces) == [Span(0, 3, "PS"), Span(6, 11, "DT"), Span(12, 16, "OG")]
    assert pipeline_spans([{"start": 0, "end": 1, "entity_group": "PS"}], text, pieces) == []  # a lone ▁
    assert pipeline_spans([{"start": None, "end": None, "entity_group": "PS"}], text, pieces) is None


def test_bad_settings_and_labels_are_refused_with_the_fix(request, tmp_path):
    with pytest.raises(ValueError, match="stride"):
        builder.make(tmp_path, request, max_length=10, stride=8).fit(OVERFIT)
    with pytest.raises(ValueError, match="positions"):
        builder.make(tmp_path, request, max_length=512).fit(OVERFIT)
    with pytest.raises(ValueError, match="pretokenize must be one of auto, none, morphemes, not 'kiwi'"):
        builder.make(tmp_path, request, pretokenize="kiwi").fit(OVERFIT)
    with pytest.raises(ValueError, match="label 'XX'"):
        builder.make(tmp_path, request).fit([Example("이순신", (Span(0, 3, "XX"),))])
    with pytest.raises(RuntimeError, match="not trained"):
        builder.make(tmp_path, request).predict(["이순신"])


def test_resume_refuses_a_checkpoint_of_other_settings_or_without_kners_state_with_the_fix(request, tmp_path):
    from kner.models.trainer_checkpoints import SELECTOR_FILE

    folder = str(tmp_path / "checkpoints")
    builder.make(tmp_path, request, epochs=1, checkpoint_dir=folder).fit(OVERFIT)
    with pytest.raises(ValueError, match=r"other settings \(lr\); resume with the same config"):
        builder.make(tmp_path, request, epochs=1, lr=1e-3, checkpoint_dir=folder, resume=True).fit(OVERFIT)
    last = next((tmp_path / "checkpoints").glob("checkpoint-*"))
    (last / SELECTOR_FILE).unlink()  # as if stopped between the Trainer's save and kner's
    with pytest.raises(ValueError, match=f"{last} has no {SELECTOR_FILE}.*delete {last} to start over"):
        builder.make(tmp_path, request, epochs=1, checkpoint_dir=folder, resume=True).fit(OVERFIT)


def torchrun_kner_train(request, tmp_path, klue_dir, out: str, *flags: str, script: Path | None = None):
    """`kner train bert` (or ``script``, which stands in for the kner command) under torchrun: 2 CPU
    processes (gloo), global batch 8 split 4 + 4, two epochs. Returns the run and each rank's logs."""
    torchrun = Path(sys.executable).with_name("torchrun")
    kner_cli = Path(sys.executable).with_name("kner")
    if not (torchrun.is_file() and kner_cli.is_file()):
        pytest.skip("torchrun or the kner script is not installed beside this python")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TRANSFORMERS_VERBOSITY": "info"}
    logs_dir = tmp_path / "logs" / " ".join([out, *flags])  # torchrun's logs of this run alone
    cmd = [str(torchrun), "--nproc_per_node=2", "--log-dir", str(logs_dir), "--redirects", "3",
           str(script or kner_cli), "train", "bert", "--data", str(klue_dir), "--train-limit", "48", "--dev-limit", "8",
           "--out", str(tmp_path / out), "--base-model", str(builder.base_model(request)), "--epochs", "2",
           "--batch-size", "8", "--max-length", "32", "--stride", "8", "--device", "cpu", *flags]
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    return done, {p.parent.name + "/" + p.name: p.read_text(errors="replace") for p in logs_dir.rglob("*.log")}


def test_kner_train_runs_data_parallel_in_two_processes(request, tmp_path, klue_dir):
    """The plain `kner train bert` command under torchrun; rank 0 alone scores dev and saves."""
    done, logs = torchrun_kner_train(request, tmp_path, klue_dir, "run")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Total train batch size (w. parallel, distributed & accumulation) = 8" in logs["0/stderr.log"]
    assert "Instantaneous batch size per device = 4" in logs["0/stderr.log"]
    assert "saved bert" in logs["0/stdout.log"] and "saved bert" not in logs["1/stdout.log"]
    tagger = kner.load(tmp_path / "run")
    assert [r.epoch for r in tagger.history] == [1, 2]
    assert len(tagger.predict(["이순신 장군"])) == 1
    shutil.rmtree(tmp_path / "run")


def test_an_interrupted_data_parallel_run_resumes_to_the_model_an_uninterrupted_one_trains(request, tmp_path, klue_dir):
    interrupted = tmp_path / "interrupted_kner.py"  # the kner command, stopped (as by Ctrl-C) when epoch 2 ends
    interrupted.write_text(
        f"import sys\nsys.path.insert(0, {str(REPO / 'tests')!r})\nimport pytest\nfrom conftest import interrupt_in_epoch\n"
        "from kner.cli import main\ninterrupt_in_epoch(pytest.MonkeyPatch(), 2)\nsys.exit(main())\n")
    straight, _ = torchrun_kner_train(request, tmp_path, klue_dir, "straight")
    stopped, _ = torchrun_kner_train(request, tmp_path, klue_dir, "stopped", script=interrupted)
    resumed, logs = torchrun_kner_train(request, tmp_path, klue_dir, "stopped", "--resume")
    assert straight.returncode == 0 and stopped.returncode != 0, stopped.stderr[-3000:]
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "after epoch 1" in logs["0/stderr.log"] + logs["0/stdout.log"]
    one, two = kner.load(tmp_path / "straight"), kner.load(tmp_path / "stopped")
    assert [(r.epoch, r.train_loss, r.valid_f1) for r in two.history] == [
        (r.epoch, r.train_loss, r.valid_f1) for r in one.history]
    texts = ["이순신 장군은 조선 시대의 명장이다.", *ODD_TEXTS]
    assert two.predict(texts) == one.predict(texts)


def test_speed_comparison_runs_both_on_the_same_texts_and_compares_spans(trained):
    from kner.bert_speed import compare_with_pipeline

    texts = [ex.text for ex in OVERFIT] * 2 + ["가나다 " * 300]  # the long one does not fit a window
    result = compare_with_pipeline(trained, texts, pipeline_batch_sizes=(1, 4), repeats=2)
    assert result["n_texts"] == 10 and set(result["pipeline_seconds_by_batch_size"]) == {1, 4}
    assert len(result["ours_seconds_each"]) == 2 and all(len(s) == 2 for s in result["pipeline_seconds_each"].values())
    assert result["pipeline_best_batch_size"] in (1, 4) and set(result["speedup_by_batch_size"]) == {1, 4}
    assert result["n_comparable"] == 10 and result["n_equal_spans"] == 10, result["examples_differing"]
    assert result["n_valid_argmax"] == result["n_equal_spans_valid_argmax"] == 10
    assert result["equal_spans_by_batch_size"] == {bs: "10/10; 10/10 where the argmax tags are valid IOB2" for bs in (1, 4)}


def test_speed_comparison_runs_the_pipeline_in_the_taggers_precision(trained, tmp_path):
    from kner.bert_speed import compare_with_pipeline

    trained.save(tmp_path / "run")
    bf16 = kner.load(tmp_path / "run", precision="bf16")
    seen = []  # is every forward pass, kner's and the pipeline's, under bf16 autocast?
    bf16.model.register_forward_hook(lambda *_: seen.append(
        torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16))
    result = compare_with_pipeline(bf16, [ex.text for ex in OVERFIT], pipeline_batch_sizes=(2,), repeats=1)
    assert result["precision"] == "bf16" and len(seen) > 4 and all(seen)
    assert result["n_equal_spans"] == result["n_comparable"] == len(OVERFIT), result["examples_differing"]


def test_speed_command_prints_the_comparison_in_the_precision_asked_for(trained, tmp_path, klue_dir, capsys):
    import json

    from kner.bert_speed import main

    trained.save(tmp_path / "run")
    main([str(tmp_path / "run"), "--data", str(klue_dir), "--limit", "300", "--precision", "bf16"])
    result = json.loads(capsys.readouterr().out)
    assert result["precision"] == "bf16" and result["device"] == "cpu" and 0 < result["n_texts"] < 300


def test_argmax_validity_follows_strict_iob2():
    from kner.align import is_valid_iob2

    assert is_valid_iob2(["O", "B-PS", "I-PS", "B-LC", "O"])
    assert not is_valid_iob2(["I-PS"]) and not is_valid_iob2(["O", "I-PS"]) and not is_valid_iob2(["B-LC", "I-PS"])


def test_benchmark_compares_runtimes_on_the_same_texts_with_equal_spans(trained, tmp_path):
    from kner.bert_speed import benchmark_extras

    fp32 = kner.load(trained.save(tmp_path / "run"), precision="fp32")  # onnxruntime runs fp32: like for like
    extras = benchmark_extras(fp32, OVERFIT + [_ex("가나다 " * 300)])  # the long text fits no window: left out
    torch_row, pipe_row_1, pipe_row_32, paired_torch_row, onnx_row = extras.values()
    assert list(extras)[1].startswith("transformers pipeline, batch 1 (its default), fp32")
    assert list(extras)[2].startswith("transformers pipeline, batch 32, fp32") and "onnxruntime" in list(extras)[4]
    assert {row["texts"] for row in extras.values()} == {len(OVERFIT)}
    n = len(OVERFIT)
    assert all(row["spans_equal_to_kner_torch"] == f"{n}/{n}" for row in (torch_row, paired_torch_row, onnx_row))
    assert all(row["spans_equal_to_kner_torch"] == f"{n}/{n}; {n}/{n} where the argmax tags are valid IOB2"
               for row in (pipe_row_1, pipe_row_32))
    assert torch_row["speed_vs_kner_torch"] == paired_torch_row["speed_vs_kner_torch"] == 1.0
    assert pipe_row_1["sentences_per_s"] > 0 and pipe_row_32["sentences_per_s"] > 0
    assert onnx_row["speed_vs_kner_torch"] > 0


def test_frozen_word_embeddings_stay_as_loaded(request, tmp_path):
    tagger = builder.make(tmp_path, request, epochs=2, freeze_embeddings=True)
    before = AutoModelForTokenClassification.from_pretrained(builder.base_model(request)).get_input_embeddings().weight
    tagger.fit(OVERFIT)
    after = tagger.model.get_input_embeddings().weight
    assert after.equal(before) and tagger.model.classifier.weight.requires_grad


def test_a_trimmed_vocabulary_keeps_the_training_segmentation_learns_and_reloads(request, tmp_path):
    base = builder.base_model(request, "sentencepiece")
    full = AutoTokenizer.from_pretrained(base)
    tagger = builder.make(tmp_path, request, "sentencepiece", trim_vocab=True, epochs=30).fit(OVERFIT)
    texts = [ex.text for ex in OVERFIT]
    pieces = lambda tok: [tok.convert_ids_to_tokens(e.ids) for e in WindowEncoder(tok, 32, 8).encode(texts)]
    assert pieces(tagger.tokenizer) == pieces(full)  # same segmentation, new ids
    rows = tagger.model.get_input_embeddings().weight.shape[0]
    assert rows == len(tagger.tokenizer) < len(full) and tagger.model.config.vocab_size == rows
    singles = [p for p in full.get_vocab() if len(p) == 1]
    assert all(p in tagger.tokenizer.get_vocab() for p in singles)  # unseen text still tokenizes
    predicted = tagger.predict(texts)
    assert score(OVERFIT, predicted).f1 == 1.0
    tagger.save(tmp_path / "run")
    reloaded = kner.load(tmp_path / "run")
    assert reloaded.predict(texts) == predicted and len(reloaded.tokenizer) == rows
    odd = reloaded.predict(ODD_TEXTS)
    assert all(0 <= sp.start < sp.end <= len(t) for t, spans in zip(ODD_TEXTS, odd) for sp in spans)


def test_trimming_the_vocabulary_of_a_wordpiece_model_is_refused_with_the_fix(request, tmp_path):
    with pytest.raises(ValueError, match="needs a SentencePiece .Unigram. or BPE tokenizer; this one is WordPiece.*trim_vocab false"):
        builder.make(tmp_path, request, trim_vocab=True).fit(OVERFIT)


def test_a_bf16_checkpoint_fine_tunes_with_fp32_weights(request, tmp_path):
    source = builder.base_model(request)
    AutoModel.from_pretrained(source).to(torch.bfloat16).save_pretrained(tmp_path / "bf16")  # an encoder, no head
    AutoTokenizer.from_pretrained(source).save_pretrained(tmp_path / "bf16")
    tagger = builder.make(tmp_path, request, base_model=str(tmp_path / "bf16"), epochs=1).fit(OVERFIT)
    assert {p.dtype for p in tagger.model.parameters()} == {torch.float32}
