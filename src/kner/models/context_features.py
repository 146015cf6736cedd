"""Frozen contextual features for a character tagger: a pretrained encoder's hidden states, per character.

Each character gets the vectors of the subword covering it at a few of the encoder's layers, zeros
where no subword covers it (spaces); the tagger mixes the layers with learned weights (ELMo's scalar
mix, Peters et al., 2018) and reads the mix beside its own inputs, as Flair stacks embeddings. The
encoder is never trained, so a text's features are computed once, and an encoder tuned for sentence
embeddings (multilingual-e5) still serves: its middle layers carry the token-level knowledge. A
decoder LLM reads left to right; with ``echo`` it reads each window twice and gives the second
reading's states, which have seen the whole window (echo embeddings, Springer et al., 2024).
"""
from __future__ import annotations

import copy
import hashlib
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..align import owner_window
from . import feature_cache, vocab_trim
from .hf_common import autocast, local_only

ENCODER_DIR = "encoder"  # inside a saved model: the encoder and its tokenizer, so the model needs nothing else
ENCODER2_DIR = "encoder2"  # a second encoder read beside the first
MAX_LENGTH, STRIDE = 512, 128  # a KLUE sentence fits one window; longer texts overlap by STRIDE subwords
BATCH_SIZE = 64  # windows per forward pass (sorted by length)


def layer_numbers(n_layers: int, wanted: int) -> list[int]:
    """``wanted`` hidden-state indices spread evenly over an ``n_layers`` encoder, ending at the
    last (4 of 12 -> 3, 6, 9, 12; index 0 is the embedding output, never taken)."""
    if not 1 <= wanted <= n_layers:
        raise ValueError(f"encoder_layers must be between 1 and the encoder's {n_layers} layers, not {wanted}")
    return [round(n_layers * (k + 1) / wanted) for k in range(wanted)]


class ContextEncoder:
    """A frozen Hugging Face model (an encoder, or a decoder LLM with ``normalize``) that turns texts
    into ``(len(text), layers, hidden)`` tensors."""

    def __init__(self, model, tokenizer, layers: int, normalize: bool = False, pretokenize: str = "auto",
                 echo: bool = False, stored_dtype: torch.dtype = torch.float32, source: str | None = None) -> None:
        from .bert import WindowEncoder  # the BERT family's windowing and morpheme pieces, shared

        self.model, self.tokenizer, self.pretokenize = model.eval().requires_grad_(False), tokenizer, pretokenize
        self.stored_dtype = stored_dtype  # the checkpoint's own dtype, which save keeps
        self.source = source  # the folder or hub id it came from, which keys its cached features
        self.normalize = normalize  # each vector to unit RMS: a decoder LLM's hidden states grow through its layers
        self.echo = echo
        self.layers = layer_numbers(model.config.num_hidden_layers, layers)
        self.dim = model.config.hidden_size
        length = min(MAX_LENGTH, tokenizer.model_max_length)  # a small encoder may know fewer positions
        length //= 2 if echo else 1  # a window read twice must still fit
        self.windows = WindowEncoder(tokenizer, length, min(STRIDE, length // 4), pretokenize)

    def trimmed_to(self, texts: Sequence[str]) -> "ContextEncoder":
        """The encoder without the subwords ``texts`` never use, for a SentencePiece or BPE vocabulary
        (kner.models.vocab_trim; its model is cut in place): those texts read exactly as before, others
        still without ``<unk>``, and the saved copy loses most of its embedding table. Other tokenizers
        (WordPiece vocabularies are small) keep theirs: ``self`` comes back."""
        if not vocab_trim.trimmable(self.tokenizer):
            return self
        used = {i for enc in self.windows.encode(texts) for i in enc.ids}
        device = next(self.model.parameters()).device
        tokenizer, model = vocab_trim.trim(self.tokenizer, self.model.cpu(), vocab_trim.kept_ids(self.tokenizer, used))
        return ContextEncoder(model.to(device), tokenizer, len(self.layers), self.normalize, self.pretokenize, self.echo,
                              self.stored_dtype, self.source)

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, layers: int, depth: int | None = None,
                        normalize: bool = False, pretokenize: str = "auto", echo: bool = False) -> "ContextEncoder":
        """The encoder, cut after its first ``depth`` layers when given (the layers above are never
        built, so it runs and saves that much smaller; any architecture, through its config)."""
        from transformers import AutoConfig, AutoModel, AutoTokenizer

        local = local_only(name_or_path)
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, local_files_only=local)
        config = AutoConfig.from_pretrained(name_or_path, local_files_only=local)
        if depth is not None:
            if not 1 <= depth <= config.num_hidden_layers:
                raise ValueError(f"encoder_depth must be between 1 and the encoder's {config.num_hidden_layers} "
                                 f"layers, not {depth}")
            config.num_hidden_layers = depth
        stored = config.dtype or torch.float32
        # Loaded in fp32 whatever the checkpoint's dtype (gemma's is bf16): bf16 weights run as bf16 even where
        # a CPU has no bf16 instructions, very slowly. ``_features`` casts them back where it reads in bf16.
        model = AutoModel.from_pretrained(name_or_path, config=config, local_files_only=local, dtype=torch.float32)
        return cls(model, tokenizer, layers, normalize, pretokenize, echo, stored, str(name_or_path))

    def save(self, directory: Path, name: str = ENCODER_DIR) -> None:
        """Saved in the checkpoint's dtype (bf16 halves gemma's copy): its weights came in it, so nothing is lost."""
        model = self.model if self.stored_dtype == torch.float32 else copy.deepcopy(self.model).to(self.stored_dtype)
        model.save_pretrained(directory / name)
        self.tokenizer.save_pretrained(directory / name)

    @classmethod
    def load(cls, directory: Path, layers: int, normalize: bool = False, pretokenize: str = "auto",
             echo: bool = False, name: str = ENCODER_DIR) -> "ContextEncoder":
        return cls.from_pretrained(directory / name, layers, None, normalize, pretokenize, echo)  # saved already cut

    def to(self, device: torch.device) -> "ContextEncoder":
        self.model.to(device)
        return self

    def features(self, texts: Sequence[str], precision: str, cache: Path | None = None) -> list[torch.Tensor]:
        """One float16 CPU tensor ``(len(text), len(self.layers), self.dim)`` per text; with ``cache``, a
        folder of earlier runs' features (kner.models.feature_cache), the texts found there are read."""
        if cache is None:
            return self._features(texts, precision)
        folder = Path(cache) / self.cache_key(precision)
        return feature_cache.cached(folder, texts, lambda missing: self._features(missing, precision))

    def held_dtype(self, precision: str) -> torch.dtype:
        """The weights' dtype for reading in ``precision``: a bf16 checkpoint read in bf16 runs in its own
        dtype (faster than fp32 weights under autocast, as exact: they came in bf16), else fp32."""
        return torch.bfloat16 if precision == "bf16" and self.stored_dtype == torch.bfloat16 else torch.float32

    def cache_key(self, precision: str) -> str:
        """The folder, inside a feature cache, of this encoder's features read in ``precision``."""
        device = next(self.model.parameters()).device
        # The vocabulary as trimmed: a text with subwords it lacks is read in other pieces than the source reads it.
        vocabulary = hashlib.sha256(self.tokenizer.backend_tokenizer.to_str().encode()).hexdigest()
        settings = {"layers": self.layers, "depth": self.model.config.num_hidden_layers, "normalize": self.normalize,
                    "echo": self.echo, "pretokenize": self.pretokenize, "window": [self.windows.size, self.windows.stride],
                    "vocabulary": vocabulary, "precision": precision, "device": device.type}
        return feature_cache.key(self.source, settings)

    def _features(self, texts: Sequence[str], precision: str) -> list[torch.Tensor]:
        from .bert import length_sorted_batches

        encoded = self.windows.encode(texts)
        jobs = [(i, w) for i, enc in enumerate(encoded) for w in range(len(enc.wins))]
        seqs = [self._sequence(encoded[i], w) for i, w in jobs]
        owners = [owner_window(enc.wins) if enc.wins else [] for enc in encoded]
        out = [torch.zeros(len(text), len(self.layers), self.dim, dtype=torch.float16) for text in texts]
        skip, device = len(self.windows.prefix), next(self.model.parameters()).device
        for p in self.model.parameters():  # not model.to: a float buffer (rotary frequencies) would round for good
            p.data = p.data.to(self.held_dtype(precision))  # exact both ways: the weights came in stored_dtype
        with torch.inference_mode():
            batches = length_sorted_batches(seqs, BATCH_SIZE, self.windows.pad_id)
            for idx, batch in tqdm(batches, desc="encoder features", total=-(-len(seqs) // BATCH_SIZE), leave=False,
                                   disable=len(seqs) <= 4 * BATCH_SIZE):
                inputs = {k: torch.from_numpy(v).to(device) for k, v in batch.items()}
                with autocast(device, precision):
                    states = self.model(**inputs, output_hidden_states=True).hidden_states
                stacked = torch.stack([states[k] for k in self.layers], dim=2)
                if self.normalize:  # in fp32, before float16 could overflow
                    stacked = F.rms_norm(stacked.float(), (self.dim,), eps=1e-6)
                stacked = stacked.to("cpu", torch.float16)
                # Each subword's vectors come from the window where it has the most context; written
                # straight into the texts' tensors, so no batch outlives its loop.
                for row, j in enumerate(idx):
                    i, w = jobs[j]
                    start, end = encoded[i].wins[w]
                    first = skip + (end - start if self.echo else 0)  # where the window's (last) reading begins
                    for t in range(start, end):
                        if owners[i][t] == w:
                            a, b = encoded[i].offsets[t]
                            out[i][a:b] = stacked[row, first + t - start]
        return out

    def _sequence(self, enc, w: int) -> list[int]:
        """Window ``w``'s ids with the special tokens around it; with ``echo``, its subwords twice."""
        ids = self.windows.window_ids(enc, w)
        if not self.echo:
            return ids
        start, end = enc.wins[w]
        return ids[: len(self.windows.prefix)] + enc.ids[start:end] + ids[len(self.windows.prefix) :]
