"""Trim a SentencePiece (Unigram) encoder's vocabulary to the subwords the training text uses.

XLM-R-family encoders such as multilingual-e5-small spend most of their weights on a 250k-row
embedding table, of which KLUE's training text uses about 6k rows. Trimmed, the embeddings are
cheap to fine-tune and the saved model is a fraction of the size. Written by hand because no
maintained library trims a fast tokenizer and a transformers model together: the Unigram pieces
keep their scores, so every kept segmentation is still the best one and the training text
tokenizes exactly as before, only with new ids.
"""
from __future__ import annotations

import json
import tempfile
from collections.abc import Iterable
from pathlib import Path


def _spec(tokenizer) -> dict:
    return json.loads(tokenizer.backend_tokenizer.to_str())


def trimmable(tokenizer) -> bool:
    """Whether ``tokenizer`` is a SentencePiece (Unigram) one, the kind :func:`trim` handles."""
    return _spec(tokenizer)["model"]["type"] == "Unigram"


def kept_ids(tokenizer, used: Iterable[int]) -> list[int]:
    """The ids to keep, ascending: those ``used``, every special or added token, and every
    single-character piece, so any text the full vocabulary reads without ``<unk>`` still is."""
    spec = _spec(tokenizer)
    if not trimmable(tokenizer):
        raise ValueError(f"trim_vocab needs a SentencePiece (Unigram) tokenizer; this one is {spec['model']['type']} "
                         "(WordPiece vocabularies such as klue/bert-base's are small already): set trim_vocab false")
    singles = {i for i, (piece, _) in enumerate(spec["model"]["vocab"]) if len(piece) == 1}
    specials = {t["id"] for t in spec["added_tokens"]}
    return sorted(singles | specials | set(used))


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


def trim(tokenizer, model, keep: list[int]):
    """A trimmed copy of ``tokenizer`` and ``model`` (changed in place) whose id ``k`` is the old
    ``keep[k]``: the tokenizer loses the other pieces, the word embeddings the other rows, and the
    config's special-token ids follow. Returns ``(tokenizer, model)``."""
    import torch
    from transformers import AutoTokenizer

    new_id = id_map(keep)
    spec = _spec(tokenizer)
    spec["model"]["vocab"] = [spec["model"]["vocab"][i] for i in keep]
    if spec["model"].get("unk_id") is not None:
        spec["model"]["unk_id"] = new_id[spec["model"]["unk_id"]]
    for token in spec["added_tokens"]:
        token["id"] = new_id[token["id"]]
    _remap_post_processor(spec.get("post_processor"), new_id)
    with tempfile.TemporaryDirectory(prefix="kner-trim-") as tmp:  # reloaded as saved, so the run folder reads the same
        tokenizer.save_pretrained(tmp)
        Path(tmp, "tokenizer.json").write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")
        for stale in Path(tmp).glob("*.model"):  # a slow tokenizer's file would still list the full vocabulary
            stale.unlink()
        trimmed = AutoTokenizer.from_pretrained(tmp, local_files_only=True)

    old = model.get_input_embeddings()
    rows = torch.nn.Embedding(len(keep), old.embedding_dim, padding_idx=new_id.get(old.padding_idx))
    with torch.no_grad():
        rows.weight.copy_(old.weight[torch.tensor(keep)])
    model.set_input_embeddings(rows)
    model.config.vocab_size = len(keep)
    for name in ("pad_token_id", "bos_token_id", "eos_token_id", "sep_token_id", "cls_token_id"):
        if getattr(model.config, name, None) is not None:
            setattr(model.config, name, new_id[getattr(model.config, name)])
    return trimmed, model
