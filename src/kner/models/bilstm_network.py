"""The BiLSTM-CRF's network: embeddings of the encoded ids (and encoder features) -> BiLSTM -> emissions -> CRF.

Apart from the tagger (kner.models.bilstm_crf), which encodes texts, trains and decodes.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import nn

from .bilstm_inputs import BI_L, BI_R, CHAR, EOJ, EOJEOL, GAZ, JAMO, LEX, MORPH, N_JAMO, POS, Vocab
from .crf_layer import CRF, iob2_allowed

if TYPE_CHECKING:
    from .bilstm_crf import BiLSTMCRFConfig


class Network(nn.Module):
    def __init__(self, cfg: BiLSTMCRFConfig, vocab: Vocab, tags: list[str], context_dims: Sequence[int] = ()) -> None:
        super().__init__()
        n_chars, n_bigrams, n_pos, n_morph, n_gaz, n_lex = vocab.sizes()
        self.char = nn.Embedding(n_chars, cfg.char_dim, padding_idx=0)
        self.bigram = nn.Embedding(n_bigrams, cfg.bigram_dim, padding_idx=0) if cfg.bigram_dim else None
        self.eojeol = nn.Embedding(len(EOJEOL) + 1, cfg.eojeol_dim, padding_idx=0) if cfg.eojeol_dim else None
        self.jamo = nn.Embedding(N_JAMO, cfg.jamo_dim, padding_idx=0) if cfg.jamo_dim else None
        # A width-3 convolution over a syllable's three jamo slots is one linear map of their concatenation.
        self.jamo_conv = nn.Linear(3 * cfg.jamo_dim, cfg.jamo_dim) if cfg.jamo_dim else None
        self.pos = nn.Embedding(n_pos, cfg.kiwi_dim, padding_idx=0) if cfg.kiwi_dim else None
        self.morph = nn.Embedding(n_morph, cfg.kiwi_vectors, padding_idx=0) if cfg.kiwi_vectors else None
        if self.morph is not None:
            self.morph.weight.requires_grad_(False)  # pretrained elsewhere; fit() fills them in
        self.gaz = nn.Embedding(n_gaz, cfg.gazetteer_dim, padding_idx=0) if cfg.gazetteer_dim else None
        self.lex = nn.Embedding(n_lex, cfg.lexicon_dim, padding_idx=0) if cfg.lexicon_dim else None
        # ELMo's scalar mix of each encoder's layers: softmax weights and one scale, both learned.
        self.context_dims = list(context_dims)
        n = len(self.context_dims)
        self.context_mix = nn.Parameter(torch.zeros(cfg.encoder_layers)) if n > 0 else None
        self.context_scale = nn.Parameter(torch.ones(1)) if n > 0 else None
        self.context2_mix = nn.Parameter(torch.zeros(cfg.encoder_layers)) if n > 1 else None
        self.context2_scale = nn.Parameter(torch.ones(1)) if n > 1 else None
        dim = (cfg.char_dim + 2 * cfg.bigram_dim + cfg.eojeol_dim + cfg.jamo_dim + cfg.kiwi_dim + cfg.kiwi_vectors
               + cfg.gazetteer_dim + cfg.lexicon_dim + sum(context_dims))
        self.dropout = nn.Dropout(cfg.dropout)
        self.lstm = nn.LSTM(dim, cfg.hidden, num_layers=cfg.layers, bidirectional=True, batch_first=True,
                            dropout=cfg.dropout if cfg.layers > 1 else 0.0)
        self.emit = nn.Linear(2 * cfg.hidden, len(tags))
        allowed, start = iob2_allowed(tags) if cfg.constrained else (None, None)
        self.crf = CRF(len(tags), allowed, start)

    def emissions(self, x: torch.Tensor, lengths: torch.Tensor, extra: torch.Tensor | None = None,
                  context: torch.Tensor | None = None) -> torch.Tensor:
        """``x`` (batch, seq, 11) ids -> (batch, seq, tags) emission scores. ``extra``: vectors for
        morpheme ids past the table (``BiLSTMCRFTagger._extend``); ``context``: the encoder's
        features (batch, seq, encoder_layers, sum of the encoders' dims) when the network reads them."""
        x = x.transpose(0, 1)  # (seq, batch, 11): time-major, so packing copies whole time steps
        parts = [self.char(x[..., CHAR])]
        if self.bigram is not None:
            parts += [self.bigram(x[..., BI_L]), self.bigram(x[..., BI_R])]
        if self.eojeol is not None:
            parts.append(self.eojeol(x[..., EOJ]))
        if self.jamo is not None:
            jamo = self.jamo(x[..., JAMO : JAMO + 3]).flatten(2)  # (seq, batch, 3 * jamo_dim)
            parts.append(torch.tanh(self.jamo_conv(jamo)))
        if self.pos is not None:
            parts.append(self.pos(x[..., POS]))
        if self.morph is not None:
            parts.append(self._morph_vectors(x[..., MORPH], extra))
        if self.gaz is not None:
            parts.append(self.gaz(x[..., GAZ]))
        if self.lex is not None:
            parts.append(self.lex(x[..., LEX]))
        if self.context_dims:  # each encoder's dims, side by side in ``context``
            features = context.transpose(0, 1).float().split(self.context_dims, dim=-1)
            for f, mix, scale in zip(features, (self.context_mix, self.context2_mix),
                                     (self.context_scale, self.context2_scale)):
                parts.append(scale * (f * torch.softmax(mix, 0)[:, None]).sum(-2))  # weights (layers, 1)
        emb = self.dropout(torch.cat(parts, dim=-1))  # (seq, batch, dim)
        if torch.is_autocast_enabled(emb.device.type):  # the LSTM casts anyway; packing then moves half the bytes
            emb = emb.to(torch.get_autocast_dtype(emb.device.type))
        # Packing keeps the backward LSTM from reading padding. Callers pass batches longest
        # first, which spares packing two reorderings (index_select) of the whole batch.
        lengths = lengths.cpu()
        ordered = bool((lengths[:-1] >= lengths[1:]).all())
        packed = nn.utils.rnn.pack_padded_sequence(emb, lengths, enforce_sorted=ordered)
        out, _ = self.lstm(packed)
        out, _ = nn.utils.rnn.pad_packed_sequence(out, total_length=x.size(0))  # (seq, batch, 2 * hidden)
        return self.emit(self.dropout(out)).transpose(0, 1)  # (batch, seq, tags)

    def _morph_vectors(self, ids: torch.Tensor, extra: torch.Tensor | None) -> torch.Tensor:
        n = self.morph.num_embeddings
        vectors = self.morph(ids.clamp(max=n - 1))  # (..., kiwi_vectors)
        beyond = ids >= n
        if extra is not None and beyond.any():
            vectors[beyond] = extra.to(vectors.dtype)[ids[beyond] - n]
        return vectors
