"""Constrained decoding that verifies copied text in one forward pass writes, token for token, what
one forward pass per token writes: on a random model, on one pushed to open and close marks often
(so drafts are cut short at marks as well as kept whole), on a sliding-window model past its
window, and on a trained model, which also needs far fewer forward passes."""
from __future__ import annotations

import pytest
import torch

from builders import sllm as builder
from conftest import OVERFIT
from kner.models import hf_common, sllm_decode
from kner.models.sllm import SLLMTagger
from kner.models.sllm_decode import MarkupAutomaton, chunks, greedy

pytestmark = pytest.mark.slow  # trains neural models or starts servers: `pytest -m "not slow"` skips them

TEXTS = [
    "이순신 장군은 1592년 한산도에서 싸웠다.",
    "😀 이순신 <장군:PS> 은 a:b > c \\ d",
    "a\\<b\\> <c> 부등호 x<y 와 y>x",
    "서울 부산 대구 인천 광주 대전 울산",  # short words: adjacent entities
    "김철수는 2019년 삼성전자에 입사했다. " * 12,  # longer than max_chars, so cut into pieces
    "",
    "   ",
    "끝",
    "\x00\x07제어\t문자\n줄바꿈",
]


def _decode(tagger: SLLMTagger, texts: list[str], draft_tokens: int) -> tuple[list[list[int]], int]:
    """Token ids of every piece of ``texts``, all in one batch (pieces of mixed lengths, blank ones too)."""
    pieces = [piece for text in texts for _, piece in chunks(text, tagger.config.max_chars)]
    automata = [MarkupAutomaton(piece, tagger.table, tagger.labels) for piece in pieces]
    prompts = [tagger.prompt_ids(piece) for piece in pieces]
    with hf_common.threads(tagger.config.num_threads):
        return greedy(tagger.model, prompts, tagger.pad_id, automata, tagger.stop_ids, [0] * len(pieces), draft_tokens)


class _Marking:
    """A decoder whose last hidden state leans towards opening after a space, a newline (so at the
    text's start) or a close (adjacent entities), and towards closing (``:``, ``PS``, ``>``) after
    some other tokens. The lean depends only on the token fed, so both ways of decoding face the
    same choices."""

    def __init__(self, decoder, head, table) -> None:
        self.decoder = decoder
        weight = head.weight.detach()
        one = {piece: table.ids_of[piece][0] for piece in (b"<", b":", b"PS", b">")}
        lean = torch.zeros_like(weight)  # (vocab, hidden): pushed direction after each token fed
        for i, piece in enumerate(table.bytes):
            if not piece:
                continue
            after = {b":": b"PS", b"PS": b">"}.get(piece)
            if after is None and (piece[-1:] in b" \n>"):
                after = b"<"
            elif after is None and b" " not in piece and piece != b"<" and i % 2 == 0:
                after = b":"
            if after:
                target = weight[one[after]]
                lean[i] = 50 * target / target.norm() ** 2
        self.lean = lean

    def __call__(self, input_ids, **kwargs):
        out = self.decoder(input_ids=input_ids, **kwargs)
        out.last_hidden_state = out.last_hidden_state + self.lean[input_ids]
        return out


@pytest.fixture(scope="module")
def untrained(tmp_path_factory, request) -> SLLMTagger:
    tagger = builder.make(tmp_path_factory.mktemp("sllm"), request)
    tagger._attach(*tagger._load_base())
    return tagger


@pytest.fixture
def marking(untrained, monkeypatch) -> SLLMTagger:
    decoder_and_head = sllm_decode._decoder_and_head

    def marked(model):
        decoder, head = decoder_and_head(model)
        return _Marking(decoder, head, untrained.table), head

    monkeypatch.setattr(sllm_decode, "_decoder_and_head", marked)
    return untrained


@pytest.mark.parametrize("draft_tokens", [1, 3, 8, 64])
def test_verified_drafts_give_the_per_token_output_of_a_random_model(untrained, draft_tokens):
    assert _decode(untrained, TEXTS, draft_tokens)[0] == _decode(untrained, TEXTS, 0)[0]


@pytest.mark.parametrize("draft_tokens", [1, 4, 16])
def test_drafts_cut_short_by_marks_give_the_per_token_output(marking, draft_tokens):
    (one_by_one, passes), (verified, fewer) = _decode(marking, TEXTS, 0), _decode(marking, TEXTS, draft_tokens)
    assert verified == one_by_one
    markup = [marking.table.text(out) for out in one_by_one]
    assert sum(m.count("<") - m.count("\\<") for m in markup) > 30  # entities did open and close, often
    assert any(m.startswith("<") for m in markup) and any(m.endswith(">") for m in markup)  # at the start, at the end
    assert any("><" in m for m in markup)  # adjacent
    assert fewer < passes  # drafts were kept


def test_sliding_window_model_past_its_window(untrained):
    """Gemma 3's sliding-window layers count cache columns, so dropped draft tokens must not leave gaps."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    config = Gemma3TextConfig(vocab_size=len(untrained.tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                              num_attention_heads=2, num_key_value_heads=1, head_dim=16, query_pre_attn_scalar=16,
                              sliding_window=8, layer_types=["sliding_attention", "full_attention"],
                              tie_word_embeddings=True, pad_token_id=untrained.pad_id, bos_token_id=None)
    torch.manual_seed(0)
    gemma = SLLMTagger(untrained.config)
    gemma._attach(untrained.tokenizer, Gemma3ForCausalLM(config).eval())
    assert _decode(gemma, TEXTS, 6)[0] == _decode(gemma, TEXTS, 0)[0]


def test_trained_model_gives_the_same_spans_in_fewer_forward_passes(tmp_path, request):
    tagger = builder.make(tmp_path, request, predict_batch_size=3).fit(OVERFIT)
    texts = [ex.text for ex in OVERFIT] + TEXTS
    per_token = SLLMTagger(tagger.config, draft_tokens=0)
    per_token._attach(tagger.tokenizer, tagger.model)
    assert tagger.predict(texts) == per_token.predict(texts)
    memorised = [ex.text for ex in OVERFIT]
    assert tagger.predict(memorised) == per_token.predict(memorised) == [sorted(ex.spans) for ex in OVERFIT]
    assert tagger.last_forward_passes * 3 < per_token.last_forward_passes, (tagger.last_forward_passes,
                                                                             per_token.last_forward_passes)
