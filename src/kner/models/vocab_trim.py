"""Trim a subword encoder's vocabulary to the subwords the training text uses.

XLM-R-family encoders such as multilingual-e5-small, and LLMs such as gemma-3-270m, spend much of
their weights on a 250k-row embedding table, of which KLUE's training text uses a few thousand
rows. Trimmed, the embeddings are cheap to fine-tune and the saved model is a fraction of the size.
Written by hand because no maintained library trims a fast tokenizer and a transformers model
together. The training text tokenizes exactly as before, only with new ids:
- a SentencePiece (Unigram) vocabulary keeps its pieces' scores, so every kept segmentation is
  still the best one;
- a BPE vocabulary keeps every token its kept tokens are merged from, and every merge among kept
  tokens, so the merges that built the training text still apply in the same order.
"""
from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Iterable
from pathlib import Path

_BYTE = re.compile(r"<0x[0-9A-F]{2}>")  # a byte-fallback BPE's byte tokens


def _spec(tokenizer) -> dict:
    return json.loads(tokenizer.backend_tokenizer.to_str())


def _kind(spec: dict) -> str:
    model = spec["model"]
    if model["type"] == "BPE" and (model.get("continuing_subword_prefix") or model.get("end_of_word_suffix")):
        return "BPE with affixes"  # a merge's result is not the concatenation of its parts
    return model["type"]


def trimmable(tokenizer) -> bool:
    """Whether ``tokenizer`` is a SentencePiece (Unigram) or plain BPE one, the kinds :func:`trim` handles."""
    return _kind(_spec(tokenizer)) in ("Unigram", "BPE")


def _merges(model: dict) -> list[tuple[str, str]]:
    """A BPE's merges as pairs, from either of tokenizers' formats ("a b" or ["a", "b"])."""
    return [tuple(m) if isinstance(m, list) else tuple(m.split(" ", 1)) for m in model["merges"]]


def _bpe_closure(model: dict, kept: set[str]) -> set[str]:
    """``kept`` and every token a kept token is merged from, recursively (by any of its merges)."""
    parts: dict[str, list[str]] = {}
    for a, b in _merges(model):
        parts.setdefault(a + b, []).extend((a, b))
    todo = list(kept)
    while todo:
        for part in parts.get(todo.pop(), ()):
            if part not in kept:
                kept.add(part)
                todo.append(part)
    return kept


def kept_ids(tokenizer, used: Iterable[int]) -> list[int]:
    """The ids to keep, ascending: those ``used``, every special or added token, every
    single-character piece and byte token, so any text the full vocabulary reads without ``<unk>``
    still is, and for a BPE the tokens the kept ones are merged from."""
    spec = _spec(tokenizer)
    kind, model = _kind(spec), spec["model"]
    if kind not in ("Unigram", "BPE"):
        raise ValueError(f"trim_vocab needs a SentencePiece (Unigram) or BPE tokenizer; this one is {kind} "
                         "(WordPiece vocabularies such as klue/bert-base's are small already): set trim_vocab false")
    pieces = dict(enumerate(p for p, _ in model["vocab"])) if kind == "Unigram" else {i: t for t, i in model["vocab"].items()}
    keep = {i for i, piece in pieces.items() if len(piece) == 1 or _BYTE.fullmatch(piece)}
    keep |= {t["id"] for t in spec["added_tokens"]} | set(used)
    if kind == "BPE":
        closed = _bpe_closure(model, {pieces[i] for i in keep if i in pieces})
        keep |= {model["vocab"][t] for t in closed}
    return sorted(keep)


def id_map(keep: list[int]) -> dict[int, int]:
    """Old id -> new id after :func:`trim` with ``keep``."""
    return {old: new for new, old in enumerate(keep)}


def _remap_post_processor(node, new_id: dict[int, int]) -> None:
    """TemplateProcessing names its special tokens' ids; a Sequence nests processors."""
    if isinstance(node, dict):
        for special in (node.get("special_tokens") or {}).values():
            special["ids"] = [new_id[i] for i in special["ids"]]
        for child in node.get("processors") or []:
            _remap_post_processor(child, new_id)


def _trim_model_spec(model: dict, keep: list[int], new_id: dict[int, int]) -> None:
    if model["type"] == "Unigram":
        model["vocab"] = [model["vocab"][i] for i in keep]
        if model.get("unk_id") is not None:
            model["unk_id"] = new_id[model["unk_id"]]
        return
    model["vocab"] = {t: new_id[i] for t, i in model["vocab"].items() if i in new_id}
    kept = model["vocab"]
    model["merges"] = [list(m) for m in _merges(model) if m[0] in kept and m[1] in kept and m[0] + m[1] in kept]


def trim(tokenizer, model, keep: list[int]):
    """A trimmed copy of ``tokenizer`` and ``model`` (changed in place) whose id ``k`` is the old
    ``keep[k]``: the tokenizer loses the other pieces, the word embeddings the other rows, and the
    config's special-token ids follow. Returns ``(tokenizer, model)``."""
    import torch
    from transformers import AutoTokenizer

    new_id = id_map(keep)
    spec = _spec(tokenizer)
    _trim_model_spec(spec["model"], keep, new_id)
    for token in spec["added_tokens"]:
        token["id"] = new_id[token["id"]]
    _remap_post_processor(spec.get("post_processor"), new_id)
    with tempfile.TemporaryDirectory(prefix="kner-trim-") as tmp:  # reloaded as saved, so the run folder reads the same
        tokenizer.save_pretrained(tmp)
        Path(tmp, "tokenizer.json").write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")
        for stale in Path(tmp).glob("*.model"):  # a slow tokenizer's file would still list the full vocabulary
            stale.unlink()
        trimmed = AutoTokenizer.from_pretrained(tmp, local_files_only=True)

    # The rows are cut inside the existing module, which keeps its class: Gemma's scales its output.
    rows = model.get_input_embeddings()
    with torch.no_grad():
        rows.weight = torch.nn.Parameter(rows.weight[torch.tensor(keep)].clone())
    rows.num_embeddings = len(keep)
    if rows.padding_idx is not None:
        rows.padding_idx = new_id.get(rows.padding_idx)
    model.config.vocab_size = len(keep)
    for name in ("pad_token_id", "bos_token_id", "eos_token_id", "sep_token_id", "cls_token_id"):
        if getattr(model.config, name, None) is not None:
            setattr(model.config, name, new_id[getattr(model.config, name)])
    return trimmed, model
