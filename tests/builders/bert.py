"""Tiny random encoders with tokenizers trained offline on KLUE text, saved as local folders that
``BertTagger(base_model=...)`` loads like any hub model: a BERT with WordPiece, an XLM-R-style
model with a SentencePiece (Unigram + Metaspace) tokenizer whose offsets include the ``▁`` space,
and a Gemma 3 decoder with gemma-3-270m's kind of tokenizer (byte-fallback BPE, spaces as ``▁``)."""
from __future__ import annotations

import json
from pathlib import Path

from kner.models.bert import BertTagger

_BUILT: dict[str, Path] = {}  # one folder per kind per test session


def wordpiece_model(texts: list[str], directory: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]", max_input_chars_per_word=20))
    # No lowercasing: BERT's lowercasing also strips accents, which decomposes Hangul.
    tok.normalizer = normalizers.BertNormalizer(lowercase=False, strip_accents=False, handle_chinese_chars=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=1500, special_tokens=specials))
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)])
    tok.decoder = decoders.WordPiece()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]", model_max_length=64)
    fast.save_pretrained(directory)
    config = BertConfig(vocab_size=tok.get_vocab_size(), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64, hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0, pad_token_id=0)
    BertModel(config).save_pretrained(directory)


def sentencepiece_model(texts: list[str], directory: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast, XLMRobertaConfig, XLMRobertaModel

    specials = ["<s>", "<pad>", "</s>", "<unk>"]
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()  # like XLM-R's: "㎞" becomes "km", offsets still point at "㎞"
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.train_from_iterator(texts, trainers.UnigramTrainer(vocab_size=1500, special_tokens=specials, unk_token="<unk>"))
    tok.post_processor = processors.TemplateProcessing(single="<s> $A </s>", special_tokens=[("<s>", 0), ("</s>", 2)])
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", cls_token="<s>",
                                   sep_token="</s>", pad_token="<pad>", unk_token="<unk>", model_max_length=64)
    fast.save_pretrained(directory)
    config = XLMRobertaConfig(vocab_size=tok.get_vocab_size(), hidden_size=32, num_hidden_layers=2,
                              num_attention_heads=2, intermediate_size=64, max_position_embeddings=66,
                              hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, type_vocab_size=1,
                              pad_token_id=1, bos_token_id=0, eos_token_id=2)
    XLMRobertaModel(config).save_pretrained(directory)


def gemma_model(texts: list[str], directory: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig, PreTrainedTokenizerFast

    specials = ["<pad>", "<eos>", "<bos>", "<unk>"]
    trained = Tokenizer(models.BPE(unk_token="<unk>"))
    trained.normalizer = normalizers.Replace(" ", "▁")
    trained.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=1500, special_tokens=specials))
    vocab = trained.get_vocab()
    # Gemma's layout: the specials, then a token per byte for characters outside the vocabulary.
    tokens = specials + [f"<0x{b:02X}>" for b in range(256)] + sorted(set(vocab) - set(specials), key=vocab.get)
    merges = [tuple(m) for m in json.loads(trained.to_str())["model"]["merges"]]
    tok = Tokenizer(models.BPE({t: i for i, t in enumerate(tokens)}, merges, unk_token="<unk>", byte_fallback=True))
    tok.normalizer = normalizers.Replace(" ", "▁")
    tok.pre_tokenizer = pre_tokenizers.Split(" ", behavior="merged_with_previous")
    tok.add_special_tokens(specials)
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 2)])
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
                                   unk_token="<unk>", model_max_length=4096)
    fast.save_pretrained(directory)
    config = Gemma3TextConfig(vocab_size=len(tokens), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                              num_attention_heads=2, num_key_value_heads=1, head_dim=16, max_position_embeddings=512,
                              sliding_window=16, pad_token_id=0, eos_token_id=1, bos_token_id=2)
    Gemma3ForCausalLM(config).save_pretrained(directory)


def base_model(request, kind: str = "wordpiece") -> Path:
    """The folder of a tiny random model of ``kind`` (``wordpiece``, ``sentencepiece`` or ``gemma``)."""
    if kind not in _BUILT:
        import torch

        texts = request.getfixturevalue("klue_text_slice")
        directory = request.getfixturevalue("tmp_path_factory").mktemp(f"tiny-{kind}")
        torch.manual_seed(0)
        {"wordpiece": wordpiece_model, "sentencepiece": sentencepiece_model, "gemma": gemma_model}[kind](texts, directory)
        _BUILT[kind] = directory
    return _BUILT[kind]


def make(tmp_path, request, kind: str = "wordpiece", **overrides) -> BertTagger:
    # No dropout in the tiny models, a high rate and enough epochs: five sentences are memorised in seconds.
    settings = dict(base_model=str(base_model(request, kind)), max_length=32, stride=8, lr=3e-3, batch_size=4,
                    epochs=40, warmup_ratio=0.0, weight_decay=0.0, device="cpu", num_threads=1, seed=0)
    return BertTagger(**{**settings, **overrides})
