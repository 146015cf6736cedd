"""On a CUDA GPU (scripts/gpu_check.sh runs these there): every torch family learns a few sentences'
exact spans in fp32 and in the mixed precision ``auto`` picks, a model saved on the GPU predicts
the same on the CPU, and the sllm's cached decoding loop writes what transformers' ``generate``
writes, with that machine's CUDA kernels and library versions."""
from __future__ import annotations

import pytest
import torch

import kner
from builders import bert, bilstm_crf, sllm
from kner.gpu_check import BILSTM_WITHOUT_KIWI

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

FAMILIES = ["bilstm-crf", "bilstm-crf-encoder", "bert", "sllm", "sllm-lora"]


def make(family: str, tmp_path, request, **settings):
    """The tests' tiny model of ``family``; "sllm-lora" trains a LoRA adapter on a half-precision base,
    "bilstm-crf-encoder" reads a tiny encoder's hidden states (computed on the GPU too)."""
    if family.startswith("bilstm-crf"):
        from kner.models.bilstm_crf import BiLSTMCRFTagger

        if family == "bilstm-crf-encoder":
            settings.update(encoder=str(bert.base_model(request, "sentencepiece")), encoder_layers=2)
        return BiLSTMCRFTagger(bilstm_crf.make(tmp_path, request).config, **BILSTM_WITHOUT_KIWI, **settings)
    if family == "sllm-lora":
        settings.update(lora=True, lora_rank=8, lora_alpha=16, lora_dropout=0.0, lr=1e-2)
    return {"bert": bert, "sllm": sllm, "sllm-lora": sllm}[family].make(tmp_path, request, **settings)


def weights_device(tagger) -> torch.device:
    return next((tagger.net if hasattr(tagger, "net") else tagger.model).parameters()).device


@pytest.mark.parametrize("precision", ["fp32", "auto"])
@pytest.mark.parametrize("family", FAMILIES)
def test_family_learns_exact_spans_on_the_gpu(family, precision, tmp_path, request, overfit_examples):
    tagger = make(family, tmp_path, request, device="cuda", precision=precision).fit(overfit_examples)
    assert weights_device(tagger).type == "cuda"
    if not family.startswith("bilstm-crf"):  # the Bi-LSTM-CRF trains in fp32, uses precision at inference only
        assert tagger.precision == ("fp32" if precision == "fp32" else "bf16" if torch.cuda.is_bf16_supported() else "fp16")
    assert tagger.predict([ex.text for ex in overfit_examples]) == [sorted(ex.spans) for ex in overfit_examples]


@pytest.mark.parametrize("family", FAMILIES)
def test_a_model_saved_on_the_gpu_predicts_the_same_on_the_cpu(family, tmp_path, request, overfit_examples):
    texts = [ex.text for ex in overfit_examples]
    tagger = make(family, tmp_path, request, device="cuda").fit(overfit_examples)
    on_gpu = tagger.predict(texts)
    tagger.save(tmp_path / "model")
    loaded = kner.load(tmp_path / "model", device="cpu")
    assert weights_device(loaded).type == "cpu"
    assert loaded.predict(texts) == on_gpu == [sorted(ex.spans) for ex in overfit_examples]


@pytest.mark.parametrize("family", ["sllm", "sllm-lora"])
def test_sllm_decoding_loop_writes_what_generate_writes_on_the_gpu(family, tmp_path, request, overfit_examples):
    from kner.models.sllm_decode import greedy

    tagger = make(family, tmp_path, request, device="cuda", precision="fp32").fit(overfit_examples)
    prompts = [tagger.prompt_ids(t) for t in [ex.text for ex in overfit_examples] + ["부산 사과", "오늘 3시 서울에서"]]
    outputs, _ = greedy(tagger.model, prompts, tagger.pad_id, None, tagger.stop_ids, [12] * len(prompts))
    assert outputs == sllm.generate_reference(tagger, prompts, 12)
    assert len({tuple(o) for o in outputs}) > 1  # the prompts lead to different continuations
