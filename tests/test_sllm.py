"""The sllm family: constrained decoding writes the input back exactly, the markup and tolerant
parsers, long-text chunking, LoRA save/load, and the constrained-vs-free comparison."""
from __future__ import annotations

import random

import pytest

import kner
from builders import sllm as builder
from conftest import OVERFIT, interrupt_in_epoch
from kner.align import parse_markup, to_markup
from kner.models.sllm import SLLMTagger, compare_decoding
from kner.models.sllm_decode import MarkupAutomaton, TokenTable, chunks, greedy, read_output
from kner.types import LABELS, Span

pytestmark = pytest.mark.slow  # trains neural models or starts servers: `pytest -m "not slow"` skips them

TRICKY = [
    "이순신 장군은 1592년 한산도에서 싸웠다.",
    "😀 이순신 <장군:PS> 은 a:b > c \\ d",
    "漢字 テスト ABC 123 5㎞",
    "\x00\x07제어\t문자\n줄바꿈",
    "a:PS> <b:OG> :::",
    " 앞뒤 공백 ",
]


@pytest.fixture
def untrained(tmp_path, request) -> SLLMTagger:
    tagger = builder.make(tmp_path, request)
    tagger._attach(*tagger._load_base())
    return tagger


@pytest.fixture(scope="module")
def trained(tmp_path_factory, request) -> SLLMTagger:
    return builder.make(tmp_path_factory.mktemp("sllm"), request).fit(OVERFIT)


def test_constrained_decoding_reproduces_any_text_from_an_untrained_model(untrained):
    automata = [MarkupAutomaton(t, untrained.table) for t in TRICKY]
    prompts = [untrained.prompt_ids(t) for t in TRICKY]
    outputs, _ = greedy(untrained.model, prompts, untrained.pad_id, automata, untrained.stop_ids, [0] * len(TRICKY))
    for text, out in zip(TRICKY, outputs):
        written, _ = parse_markup(untrained.table.text(out))
        assert written == text
    spans = untrained.predict(TRICKY)
    assert untrained.last_parse_failures == 0
    assert untrained.last_generated_tokens > 0
    assert all(s.label in LABELS for ss in spans for s in ss)


def test_unconstrained_greedy_decoding_writes_what_transformers_generate_writes(trained):
    """The hand-written cached loop against the reference: left-padded prompts of different
    lengths, greedy, stopped at the end token or the budget."""
    prompts = [trained.prompt_ids(t) for t in [ex.text for ex in OVERFIT] + TRICKY]
    outputs, _ = greedy(trained.model, prompts, trained.pad_id, None, trained.stop_ids, [12] * len(prompts))
    assert outputs == builder.generate_reference(trained, prompts, 12)
    assert len({tuple(o) for o in outputs}) > 1  # the prompts do lead to different continuations


def test_every_path_through_the_automaton_is_valid_markup_of_the_input(untrained):
    """Random walks over the allowed tokens (not just the greedy one) always end in markup that
    parses back to exactly the input, entities included."""
    rng = random.Random(0)
    opened = 0
    for text in TRICKY:
        for _ in range(20):
            automaton, ids = MarkupAutomaton(text, untrained.table), []
            while not automaton.done:
                allowed = automaton.allowed()
                assert allowed, f"dead end after {untrained.table.text(ids)!r}"
                markup = [t for t in allowed if untrained.table.bytes[t][:1] in (b"<", b":")]
                token = rng.choice(markup if markup and rng.random() < 0.3 else allowed)
                automaton.advance(token)
                ids.append(token)
            written, spans = parse_markup(untrained.table.text(ids))
            assert written == text
            opened += len(spans)
            assert all(not text[s.start].isspace() for s in spans)
    assert opened > 20  # the walks did exercise entities


def test_table_rejects_a_tokenizer_that_cannot_write_every_byte(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(["가나다 라마"] * 10, trainers.BpeTrainer(vocab_size=50, special_tokens=["[UNK]"]))
    with pytest.raises(ValueError, match="byte"):
        TokenTable(PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]"))


def test_markup_round_trips_through_the_reader():
    text = "<이순신>: 장군 a:b \\ 서울"
    spans = [Span(text.index(s), text.index(s) + len(s), label)
             for s, label in (("이순신>", "PS"), (": 장군", "PS"), ("a:b", "OG"), ("\\ 서", "LC"))]
    assert read_output(to_markup(text, spans), text) == (spans, True)


@pytest.mark.parametrize("output, expected", [
    ("<이순신:PS> 장군은 조선 시데의 명장", [Span(0, 3, "PS")]),  # a changed character
    ("<이순신:PS> 장군은 <조선:XX> 시대의 명장", [Span(0, 3, "PS")]),  # unknown type
    ("<이순신:PS> 장군은 <조선 시대의 명장", [Span(0, 3, "PS")]),  # never closed
    ("이순신 장군은 <조선 시대:DT>의 명장이다.\n다음 문장", [Span(8, 13, "DT")]),  # runs on
    ("<이순신 :PS> 장군", [Span(0, 3, "PS")]),  # space inside the entity
    ("<명장:PS>", [Span(15, 17, "PS")]),  # only the entity
    ("완전히 다른 말", []),
    ("", []),
])
def test_tolerant_reader_recovers_entities_from_broken_output(output, expected):
    text = "이순신 장군은 조선 시대의 명장"
    spans, exact = read_output(output, text)
    assert not exact
    assert spans == expected


def test_chunks_cover_the_text_and_cut_at_breaks():
    text = "첫 문장이다. 둘째 문장은 조금 더 길다. " * 30 + "끝" * 50
    pieces = chunks(text, 60)
    assert "".join(p for _, p in pieces) == text
    assert all(len(p) <= 60 for _, p in pieces)
    assert all(text[off:off + len(p)] == p for off, p in pieces)
    assert pieces[0][1].endswith(". ")
    assert chunks("짧다", 60) == [(0, "짧다")]


def test_long_text_is_answered_with_spans_that_index_it(trained):
    text = "김철수는 2019년 삼성전자에 입사했다. " * 450  # about 10,000 characters
    (spans,) = trained.predict([text])
    assert len(text) > 9000
    assert spans and all(0 <= s.start < s.end <= len(text) for s in spans)
    assert {text[s.start:s.end] for s in spans} >= {"김철수", "2019년", "삼성전자"}


def test_unconstrained_decoding_of_a_memorised_sentence_parses_exactly(trained):
    free = SLLMTagger(trained.config, constrained=False)
    free._attach(trained.tokenizer, trained.model)
    texts = [ex.text for ex in OVERFIT]
    assert free.predict(texts) == [sorted(ex.spans) for ex in OVERFIT]
    assert free.last_parse_failures == 0


def test_prompt_uses_the_chat_template(trained):
    ids = trained.prompt_ids("서울")
    assert trained.tokenizer.decode(ids).endswith("서울<|im_end|>\n<|im_start|>assistant\n")


def test_lora_adapter_saves_and_loads_to_the_same_output(tmp_path, request):
    tagger = builder.make(tmp_path, request, lora=True, lora_rank=4, lora_alpha=8, lora_dropout=0.0, epochs=2,
                          lr=1e-2, eval_limit=2)
    tagger.fit(OVERFIT[:2], valid=OVERFIT[:3])
    assert [r.epoch for r in tagger.history] == [1, 2] and tagger.history[0].valid_f1 is not None
    assert tagger.history[0].valid_sentences == 2  # eval_limit caps the per-epoch held-out slice
    tagger.save(tmp_path / "run")
    assert (tmp_path / "run/adapter_config.json").is_file() and (tmp_path / "run/prompt.json").is_file()
    assert not (tmp_path / "run/model.safetensors").exists()
    loaded = kner.load(tmp_path / "run")
    texts = TRICKY + [ex.text for ex in OVERFIT]
    assert loaded.predict(texts) == tagger.predict(texts)


def test_benchmark_shows_constrained_and_unconstrained_decoding_as_rows(trained):
    extras = trained.benchmark_extras(OVERFIT)
    assert list(extras) == ["constrained, per-token", "constrained, one-pass verification", "unconstrained"]
    for name in ("constrained, per-token", "constrained, one-pass verification"):
        assert extras[name]["parse_failures"] == 0 and extras[name]["f1"] == 1.0
    assert extras["constrained, one-pass verification"]["same_spans_as_per_token"] == 1.0


def test_compare_decoding_reports_both_modes_each_at_its_fastest_probed_batch_size(trained):
    report = compare_decoding(trained, OVERFIT, batch_sizes=(1, 4))
    for mode in ("constrained, per-token", "constrained, one-pass verification", "unconstrained"):
        assert report[mode]["f1"] == 1.0
        assert report[mode]["parse_failures"] == 0
        assert report[mode]["sentences_per_s"] > 0 and report[mode]["generated_tokens_per_s"] > 0
        assert report[mode]["forward_passes_per_sentence"] > 0
        probe = report[mode]["probe_seconds"]
        assert set(probe) == {"1", "4"} and probe[str(report[mode]["batch_size"])] == min(probe.values())
    assert report["same_spans_as_per_token"] == 1.0  # fp32: verification writes what per-token decoding writes


def test_compare_decoding_runs_only_the_decodings_asked_for(trained):
    report = compare_decoding(trained, OVERFIT[:2], batch_sizes=(2,), decodings=["constrained, one-pass verification"])
    assert "constrained, one-pass verification" in report and "same_spans_as_per_token" not in report
    assert "constrained, per-token" not in report and "unconstrained" not in report
    assert report["constrained, one-pass verification"]["batch_size"] == 2
    assert report["constrained, one-pass verification"]["probe_seconds"] == {}  # one batch size: nothing to probe


def test_a_run_its_time_budget_stopped_is_finished_and_resuming_it_trains_no_more(request, tmp_path, caplog):
    folder = str(tmp_path / "checkpoints")
    stopped = builder.make(tmp_path, request, epochs=3, max_train_minutes=1e-9, checkpoint_dir=folder).fit(OVERFIT)
    assert [r.epoch for r in stopped.history] == [1]  # one step is one epoch here, and the budget ends it
    with caplog.at_level("INFO", logger="kner"):
        resumed = builder.make(tmp_path, request, epochs=3, max_train_minutes=1e-9, checkpoint_dir=folder,
                               resume=True).fit(OVERFIT)
    assert "after epoch 1" in caplog.text
    assert [r.train_loss for r in resumed.history] == [r.train_loss for r in stopped.history]
    texts = [ex.text for ex in OVERFIT]
    assert resumed.predict(texts) == stopped.predict(texts)


def test_a_resumed_run_counts_the_time_its_checkpoint_epochs_took_against_its_time_budget(request, tmp_path, monkeypatch):
    import torch

    from kner.models.trainer_checkpoints import SELECTOR_FILE

    settings = dict(epochs=4, max_train_minutes=60.0, checkpoint_dir=str(tmp_path / "checkpoints"))
    with monkeypatch.context() as m:
        interrupt_in_epoch(m, 3)
        with pytest.raises(KeyboardInterrupt):
            builder.make(tmp_path, request, **settings).fit(OVERFIT)
    path = next((tmp_path / "checkpoints").glob("checkpoint-*")) / SELECTOR_FILE
    blob = torch.load(path, weights_only=True)  # as if its two epochs had taken 40 minutes each
    torch.save({**blob, "history": [{**r, "seconds": 2400.0} for r in blob["history"]]}, path)
    resumed = builder.make(tmp_path, request, resume=True, **settings).fit(OVERFIT)
    assert [r.epoch for r in resumed.history] == [1, 2, 3]  # epoch 3's one step passes the budget and ends the run
