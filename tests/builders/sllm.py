"""A tiny random causal LM (Qwen2 architecture) with a byte-level BPE tokenizer trained offline on
KLUE text and a small chat template, saved as a local folder that ``SLLMTagger(base_model=...)``
loads like any hub model. Byte-level BPE has a token for every byte, so any text can be written."""
from __future__ import annotations

from pathlib import Path

from kner.models.sllm import SLLMTagger

_BUILT: dict[str, Path] = {}

CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def tiny_causal_lm(texts: list[str], directory: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    # Markup examples in the training text give the markup pieces (":PS>") tokens of their own.
    markup = [f"<이순신:{t}> 장군 <서울:{t}>" for t in ("PS", "LC", "OG", "DT", "TI", "QT")] * 20
    trainer = trainers.BpeTrainer(vocab_size=1200, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(list(texts) + markup, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   model_max_length=4096)
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(directory)
    config = Qwen2Config(vocab_size=tok.get_vocab_size(), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                         tie_word_embeddings=True, pad_token_id=fast.pad_token_id, eos_token_id=fast.eos_token_id,
                         bos_token_id=None)
    Qwen2ForCausalLM(config).save_pretrained(directory)


def base_model(request) -> Path:
    if "qwen" not in _BUILT:
        import torch

        directory = request.getfixturevalue("tmp_path_factory").mktemp("tiny-causal-lm")
        torch.manual_seed(0)
        tiny_causal_lm(request.getfixturevalue("klue_text_slice"), directory)
        _BUILT["qwen"] = directory
    return _BUILT["qwen"]


def make(tmp_path, request, **overrides) -> SLLMTagger:
    # Full fine-tuning of the tiny model at a high rate: five sentences are memorised in seconds.
    settings = dict(base_model=str(base_model(request)), lora=False, lr=3e-3, epochs=120, batch_size=5,
                    warmup_ratio=0.0, eval_limit=0, max_chars=120, predict_batch_size=16, device="cpu",
                    num_threads=1, seed=0)
    return SLLMTagger(**{**settings, **overrides})


def generate_reference(tagger: SLLMTagger, prompts: list[list[int]], max_new: int) -> list[list[int]]:
    """What transformers' own ``generate`` writes greedily after left-padded ``prompts``, cut
    before the first stop token: the reference for kner's hand-written cached decoding loop."""
    import torch

    width = max(len(p) for p in prompts)
    ids = torch.tensor([[tagger.pad_id] * (width - len(p)) + p for p in prompts], device=tagger.device)
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=tagger.device)
    with torch.inference_mode():
        rows = tagger.model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new, do_sample=False,
                                     num_beams=1, pad_token_id=tagger.pad_id,
                                     eos_token_id=sorted(tagger.stop_ids))[:, width:].tolist()
    return [row[:next((k for k, t in enumerate(row) if t in tagger.stop_ids), len(row))] for row in rows]
