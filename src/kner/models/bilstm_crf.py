"""A syllable-level BiLSTM-CRF: embeddings -> stacked BiLSTM -> emissions -> linear-chain CRF.

One tag per character of the original text (spaces included), so spans never need
realigning: unknown characters map to an UNK id of their character class, never to nothing.
"""
from __future__ import annotations

import copy
import json
import logging
import math
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm import tqdm

from ..align import bio_labels, bio_to_spans, morpheme_ids, morpheme_tags, spans_to_bio
from ..gazetteer import Gazetteer, Lexicon, from_kiwi, lexicon_from_kiwi
from ..scoring import score
from ..morphology import kiwi, kiwi_model_version, morpheme_vectors
from ..types import Example, Span
from .base import EpochRecord, Tagger
from .bilstm_inputs import Vocab, ppmi_vectors
from .bilstm_network import Network
from .context_features import ENCODER2_DIR, ENCODER_DIR, ContextEncoder
from .hf_common import autocast, check_precision, pick_device, pick_precision, threads
from .selection import EpochSelector, check_resumable, learned_config, resuming, total_seconds

log = logging.getLogger(__name__)

MODEL_FILE, VOCAB_FILE, CHECKPOINT_FILE = "model.pt", "vocab.json", "checkpoint.pt"
EMA_MIN_SENTENCES = 10_000  # where ema=None turns weight averaging on (full KLUE gains, 5,000 sentences lag)
RECALL_BIASES = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)  # the values fit tries when recall_bias is None


@dataclass
class BiLSTMCRFConfig:
    char_dim: int = 128
    """Syllable embedding size."""
    min_freq: int = 1
    """Syllables seen fewer times in training map to their class's UNK."""
    bigram_dim: int = 64
    """Syllable-bigram embedding size (left and right bigram, concatenated); 0 = off."""
    bigram_min_freq: int = 2
    """Bigrams seen fewer times in training map to UNK."""
    eojeol_dim: int = 16
    """Eojeol-position (B/I/E/S/space) embedding size; 0 = off."""
    jamo_dim: int = 0
    """Sub-syllable features: the jamo of each syllable through a width-3 convolution; 0 = off."""
    kiwi_dim: int = 16
    """Kiwi morphological-tag embedding size; 0 = off (faster inference, lower F1: docs/experiments.md)."""
    kiwi_vectors: int = 256
    """Size of frozen per-character vectors of the covering Kiwi morpheme, read from the embeddings
    of Kiwi's built-in language model (trained on a large Korean corpus; 256 = all of them); 0 = off."""
    kiwi_vocab: int = 30_000
    """Kiwi's ids below this (its frequent morphemes) are in the saved vector table even if training
    never saw them; any other morpheme's vector is read from Kiwi when a text first needs it."""
    gazetteer_dim: int = 16
    """Embedding size of the name matched over each character in Kiwi's proper-noun dictionaries
    (kner.gazetteer: ``B-``/``I-`` of its Wikidata class; the derived table is saved with the model);
    0 = off (chosen on validation: docs/experiments.md)."""
    lexicon_dim: int = 0
    """Embedding size of the tag families Kiwi's lexicon gives the form matched over each character
    (kner.gazetteer.Lexicon, as the CRF's ``lexicon``; the table is saved with the model); 0 = off
    (a single model gains nothing on validation, an ensemble member errs differently: docs/experiments.md)."""
    encoder: str | None = None
    """A Hugging Face encoder (hub id or local folder) read frozen: each character also gets the hidden
    states of the subword over it at ``encoder_layers`` layers, mixed by learned weights
    (kner.models.context_features; the encoder is saved with the model); None = off."""
    encoder_layers: int = 3
    """How many of the encoder's layers are mixed, spread evenly and ending at the last."""
    encoder_depth: int | None = None
    """Run (and save) only the encoder's first ``encoder_depth`` layers, the mixed ones spread over
    them: a shallower encoder predicts faster; None = all."""
    encoder_norm: bool = False
    """Scale each of the encoder's vectors to unit RMS before the mix: for encoders whose hidden states
    grow through the layers (decoder LLMs such as Gemma), whose raw size would swamp the other inputs."""
    encoder_echo: bool = False
    """Let the encoder read each text twice and take the second reading's states, so that a decoder
    LLM's vectors (which otherwise see only the text before them) have seen the whole sentence
    (echo embeddings, Springer et al., 2024); twice the encoder's work."""
    encoder2: str | None = None
    """A second encoder read beside ``encoder``, with its own layer mix (its ``encoder_layers`` layers,
    ``encoder_norm`` as the first; whole, read once): e.g. an encoder that reads both directions beside
    a decoder LLM; saved with the model too; None = off."""
    pretrained_init: bool = True
    """Initialise syllable embeddings with PPMI-SVD vectors computed on the training text."""
    hidden: int = 200
    """LSTM hidden size per direction."""
    layers: int = 1
    """Stacked BiLSTM layers."""
    dropout: float = 0.3
    """Dropout on embeddings, between LSTM layers and before the emissions."""
    constrained: bool = True
    """Forbid invalid IOB2 transitions (I-X after anything but B-X/I-X, or at the start)."""
    batch_size: int = 32
    """Training sentences per mini-batch (batches are bucketed by length)."""
    lr: float = 2e-3
    """AdamW peak learning rate."""
    weight_decay: float = 1e-2
    """AdamW weight decay."""
    warmup_steps: int = 200
    """Linear warm-up steps; the rate then decays linearly to a tenth of lr at max_epochs."""
    clip: float = 5.0
    """Gradient norm clipping."""
    max_epochs: int = 16
    """Upper bound on training epochs (the schedule decays over this many)."""
    patience: int = 4
    """Stop after this many epochs without a better validation F1 (the best epoch is restored)."""
    ema: float | None = None
    """Evaluate and keep an exponential moving average of the weights, updated after every
    optimizer step with this decay (0 = off: the weights as trained). None (the default) = 0.999
    from 10,000 training sentences on, else off: on a few thousand sentences so slow an average
    lags behind the training (give 0.99 there if you want one)."""
    recall_bias: float | None = None
    """Subtracted from the O tag's emission scores before decoding: > 0 trades precision for recall
    (Minkov et al., 2006, "NER systems that suit user's preferences"); 0 = plain Viterbi. None (the
    default) = chosen from 0-0.5 on the validation examples given to fit (0 without them)."""
    predict_batch_size: int = 256
    """Sentences per inference batch (sorted by length)."""
    seed: int = 13
    """Seed for initialisation, dropout and batch shuffling."""
    device: str = "auto"
    """cpu, cuda, or auto (cuda when available)."""
    precision: str = "auto"
    """Inference precision: auto (bf16 or fp16 on GPU; on a CPU bf16 where it has bf16 instructions,
    AVX512-BF16 or AMX, else fp32), fp32, bf16 or fp16 (GPU); training runs in fp32."""
    num_threads: int = 0
    """torch CPU threads during fit/predict; 0 = torch's default."""
    checkpoint_dir: str | None = None
    """Save a resumable checkpoint here after every epoch; None or '' = none. kner train sets OUT/checkpoints."""
    resume: bool = False
    """Continue from checkpoint_dir's checkpoint if there is one (same result as uninterrupted)."""
    feature_cache: str | None = None
    """A folder that keeps the frozen encoders' features of the training and validation texts between
    runs, so that runs over the same encoders and training texts (other seeds and settings, ``resume``)
    read them instead of running the encoders again (kner.models.feature_cache; several GB for
    gemma-3-270m on KLUE's train); None = computed in each run. Prediction never reads or writes it."""


class BiLSTMCRFTagger(Tagger):
    """Syllable embeddings (+ bigrams, eojeol position, jamo, Kiwi tags and morphemes, gazetteer, lexicon,
    a frozen encoder's hidden states) -> BiLSTM -> CRF."""

    family = "bilstm-crf"
    epoch_trained = True
    Config = BiLSTMCRFConfig
    runtime_settings = ("precision", "predict_batch_size", "device", "num_threads", "recall_bias")
    former_defaults = {"gazetteer_dim": 0, "ema": 0.0}  # what models and checkpoints saved before these ran with

    def __init__(self, config: BiLSTMCRFConfig | None = None, **overrides) -> None:
        super().__init__(config, **overrides)
        pick_device(self.config.device)  # a wrong name or a missing GPU fails here, not at predict
        if self.config.ema is not None and not 0 <= self.config.ema < 1:
            raise ValueError(f"ema is a decay in [0, 1) (0 = off, 0.999 typical), not {self.config.ema}")
        if self.config.recall_bias is not None and not math.isfinite(self.config.recall_bias):
            raise ValueError(f"recall_bias must be a finite number (0 = off) or None (chosen on validation), "
                             f"not {self.config.recall_bias}")
        if self.config.encoder2 and not self.config.encoder:
            raise ValueError("encoder2 is read beside encoder: set encoder too (or give this one as encoder)")
        self.tags = bio_labels(self.labels)
        check_precision(self.config.precision)  # a wrong name fails here; the device is known at predict
        self.vocab: Vocab | None = None
        self.net: Network | None = None
        self.gazetteer: Gazetteer | None = None  # set by fit (from Kiwi's dictionaries) or load
        self.lexicon: Lexicon | None = None  # likewise, from Kiwi's morpheme list
        self.context: ContextEncoder | None = None  # the frozen encoder, when config.encoder names one
        self.context2: ContextEncoder | None = None  # and the second, when config.encoder2 does
        self._reset_extra()

    @property
    def device(self) -> torch.device:
        return pick_device(self.config.device)

    # --- features ---------------------------------------------------------------------------
    def _kiwi_feats(self, texts: Sequence[str]) -> list[tuple] | list[None]:
        """Per text, per character: ``B-TAG``/``I-TAG`` (else ``_``) and the Kiwi id (else -1) of
        the morpheme covering it."""
        if not (self.config.kiwi_dim or self.config.kiwi_vectors):
            return [None] * len(texts)
        return [(morpheme_tags(text, tokens), morpheme_ids(text, tokens))
                for text, tokens in zip(texts, kiwi().tokenize(list(texts)))]

    def _gaz_tags(self, texts: Sequence[str]) -> list[list[str]] | None:
        return [self.gazetteer.tags(t) for t in texts] if self.config.gazetteer_dim else None

    def _lex_tags(self, texts: Sequence[str]) -> list[list[str]] | None:
        return [self.lexicon.tags(t) for t in texts] if self.config.lexicon_dim else None

    def _encoders(self) -> list[ContextEncoder]:
        return [e for e in (self.context, self.context2) if e is not None]

    def _context(self, texts: Sequence[str], training: bool = False) -> list[torch.Tensor] | None:
        """The frozen encoders' features, one ``(len(text), encoder_layers, dim)`` tensor per text (the
        encoders' dims side by side); in ``training``, through ``feature_cache`` when it is set."""
        encoders = self._encoders()
        if not encoders:
            return None
        precision = pick_precision(self.config.precision, self.device, cpu_bf16=True)
        cache = Path(self.config.feature_cache) if training and self.config.feature_cache else None
        first, *rest = [e.features(texts, precision, cache) for e in encoders]
        if rest:
            for i in range(len(texts)):  # in place, text by text: no second copy of all features
                first[i] = torch.cat([first[i], *(r[i] for r in rest)], dim=-1)
                for r in rest:
                    r[i] = None
        return first

    def _context_batch(self, context: list[torch.Tensor] | None, idx: Sequence[int]) -> torch.Tensor | None:
        if context is None:
            return None
        return nn.utils.rnn.pad_sequence([context[i] for i in idx], batch_first=True).to(self.device)

    def _encode(self, texts: Sequence[str]) -> list[torch.Tensor]:
        feats = self._kiwi_feats(texts)
        return self.vocab.encode_many(texts, feats, self._extend(feats), self._gaz_tags(texts), self._lex_tags(texts))

    def _reset_extra(self) -> None:
        self._extra_rows: dict[int, int] = {}  # Kiwi id -> row past the table
        self._extra_vectors: torch.Tensor | None = None  # (len(_extra_rows), kiwi_vectors)
        self._extra_scale: torch.Tensor | None = None
        self._extra_lock = threading.Lock()  # a server may predict on several threads

    def _extend(self, feats: Sequence[tuple | None]) -> dict[int, int]:
        """Rows for the Kiwi morphemes in ``feats`` that the table lacks, read from Kiwi on first
        sight and kept (append-only, so rows handed out stay valid). The table holds the training
        morphemes and Kiwi's most frequent ones; a rarer morpheme, often part of a name (10% of the
        KLUE dev entities' characters), would otherwise get only its tag's generic vector. The
        vectors are frozen, so this is what a table of all of Kiwi's morphemes would give."""
        if not self.config.kiwi_vectors:
            return {}
        needed = {k for f in feats if f for k in f[1]} - {-1} - self.vocab.morph_row.keys()
        if not needed - self._extra_rows.keys():
            return self._extra_rows
        with self._extra_lock:
            rows = self._extra_rows
            new = sorted(needed - rows.keys())  # another thread may have added some meanwhile
            if new:
                size, dim = self.net.morph.weight.shape  # (table, kiwi_vectors)
                vectors = torch.tensor(morpheme_vectors(new, dim), dtype=torch.float32) * self._scale()
                old = self._extra_vectors
                self._extra_vectors = vectors if old is None else torch.cat([old, vectors])
                start = size + len(rows)
                self._extra_rows = rows = {**rows, **{k: start + i for i, k in enumerate(new)}}
            return rows

    def _scale(self) -> torch.Tensor:
        """The factor fit() put between Kiwi's vectors and the table's rows, read back from the first
        rows (least squares; exact), so models saved before this existed need nothing new."""
        if self._extra_scale is None:
            sample = self.vocab.morphemes[:64]
            rows = self.net.morph.weight[1 : 1 + len(sample)].detach().cpu().float()  # only these leave the device
            raw = torch.tensor(morpheme_vectors(sample, rows.size(1)), dtype=torch.float32)
            self._extra_scale = (rows * raw).sum() / (raw * raw).sum().clamp_min(1e-12)
        return self._extra_scale

    @staticmethod
    def _pad(encoded: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        lengths = torch.tensor([len(e) for e in encoded])
        return nn.utils.rnn.pad_sequence(list(encoded), batch_first=True), lengths  # (batch, seq, 11), (batch,)

    def _decode(self, encoded: Sequence[torch.Tensor], net: Network | None = None,
                context: list[torch.Tensor] | None = None) -> list[list[str]]:
        """Best tag sequence for each encoded text (with its encoder features ``context``, if the
        network reads them), in batches of similar length (by ``net``, default the tagger's own)."""
        net = net or self.net
        order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))
        out: list[list[str]] = [[] for _ in encoded]
        bs = self.config.predict_batch_size
        net.eval()
        # bf16 on a CPU with bf16 instructions: 1.4x the sentences/s at the same F1 (docs/usage.md).
        precision = pick_precision(self.config.precision, self.device, cpu_bf16=True)
        extra = None if self._extra_vectors is None else self._extra_vectors.to(self.device)
        with torch.inference_mode():
            for s in tqdm(range(0, len(order), bs), desc="bilstm-crf predict", leave=False, disable=len(order) <= 4 * bs):
                idx = order[s : s + bs]
                x, lengths = self._pad([encoded[i] for i in idx])
                x = x.to(self.device)
                mask = torch.arange(x.size(1), device=x.device) < lengths.to(x.device)[:, None]
                with autocast(self.device, precision):
                    emissions = net.emissions(x, lengths, extra, self._context_batch(context, idx)).float()
                if self.config.recall_bias:
                    emissions[..., 0] -= self.config.recall_bias  # tag 0 is O
                best = net.crf.decode(emissions, mask).tolist()
                for i, row, n in zip(idx, best, lengths.tolist()):
                    out[i] = [self.tags[t] for t in row[:n]]
        return out

    def _predict(self, texts: list[str]) -> list[list[Span]]:
        if self.net is None:
            raise RuntimeError("this BiLSTM-CRF is not trained yet: call fit() or kner.load() first")
        with threads(self.config.num_threads):
            return [bio_to_spans(tags) for tags in self._decode(self._encode(texts), context=self._context(texts))]

    # --- training ---------------------------------------------------------------------------
    def _gold(self, ex: Example) -> torch.Tensor:
        index = {t: i for i, t in enumerate(self.tags)}
        try:
            return torch.tensor([index[t] for t in spans_to_bio(ex.text, ex.spans)])
        except KeyError as exc:
            raise ValueError(f"example {ex.id or ex.text[:30]!r} has label {str(exc)[3:-1]!r}; this model knows {self.labels}") from exc

    def _batches(self, lengths: list[int], gen: torch.Generator) -> list[list[int]]:
        """Shuffle, sort chunks of 50 batches longest first (little padding), shuffle the batches."""
        bs, order = self.config.batch_size, torch.randperm(len(lengths), generator=gen).tolist()
        batches = []
        for s in range(0, len(order), 50 * bs):
            part = sorted(order[s : s + 50 * bs], key=lambda i: -lengths[i])
            batches += [part[i : i + bs] for i in range(0, len(part), bs)]
        return [batches[i] for i in torch.randperm(len(batches), generator=gen).tolist()]

    def fit(self, train: Sequence[Example], valid: Sequence[Example] | None = None) -> "BiLSTMCRFTagger":
        with threads(self.config.num_threads):
            return self._fit([ex for ex in train if ex.text], valid)

    def _fit(self, train: list[Example], valid: Sequence[Example] | None) -> "BiLSTMCRFTagger":
        cfg, device = self.config, self.device
        if not train:
            raise ValueError("fit needs at least one non-empty training example")
        resume = resuming(cfg)  # refused before minutes of Kiwi analysis
        torch.manual_seed(cfg.seed)
        if cfg.ema is None:  # resolved first, so the model and its checkpoints record the decay used
            cfg.ema = 0.999 if len(train) >= EMA_MIN_SENTENCES else 0.0
        selector = EpochSelector(self, valid, cfg.patience)
        texts = [ex.text for ex in train]
        self.context = self.context2 = None  # loaded first: a wrong name fails before minutes of Kiwi analysis
        # Loading may initialise weights the checkpoint lacks (e5's pooler) from the global random
        # stream; forked, so that the network starts from the same weights whatever the encoder.
        with torch.random.fork_rng(devices=[]):
            if cfg.encoder:
                self.context = ContextEncoder.from_pretrained(cfg.encoder, cfg.encoder_layers, cfg.encoder_depth,
                                                              cfg.encoder_norm, echo=cfg.encoder_echo)
            if cfg.encoder2:
                self.context2 = ContextEncoder.from_pretrained(cfg.encoder2, cfg.encoder_layers, None, cfg.encoder_norm)
        # Only the subwords of the training text are kept, so the saved model stays small.
        self.context, self.context2 = (e.to(device).trimmed_to(texts) if e else None for e in (self.context, self.context2))
        feats = self._kiwi_feats(texts)
        self.gazetteer = Gazetteer(from_kiwi()) if cfg.gazetteer_dim else None
        self.lexicon = Lexicon(lexicon_from_kiwi()) if cfg.lexicon_dim else None
        c_train = self._context(texts, training=True)
        self.vocab = Vocab.build(texts, feats if feats[0] else None, cfg, self.gazetteer, self.lexicon)
        x_train = self.vocab.encode_many(texts, feats, gaz_tags=self._gaz_tags(texts), lex_tags=self._lex_tags(texts))
        y_train = [self._gold(ex) for ex in train]
        self.net = Network(cfg, self.vocab, self.tags, [e.dim for e in self._encoders()])
        self._reset_extra()
        if cfg.pretrained_init:
            with torch.no_grad():
                self.net.char.weight[1:] = ppmi_vectors(x_train, self.vocab.sizes()[0], cfg.char_dim, cfg.seed)[1:]
        if cfg.kiwi_vectors:
            vectors = torch.tensor(morpheme_vectors(self.vocab.morphemes, cfg.kiwi_vectors), dtype=torch.float32)
            with torch.no_grad():
                self.net.morph.weight[1:] = vectors / vectors.std()
        # Encoded after the table is built, as the table may grow past it.
        x_held = {role: (self._encode(selector.texts(role)), self._context(selector.texts(role), training=True))
                  if selector.examples[role] else ([], None) for role in ("valid", "monitor")}
        self.net.to(device)
        lengths = [len(t) for t in texts]
        n_batches = -(-len(train) // cfg.batch_size)
        total = max(1, cfg.max_epochs * n_batches)
        optimizer = torch.optim.AdamW(self.net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: min(1.0, (step + 1) / max(1, cfg.warmup_steps)) * max(0.1, 1 - step / total))
        # The average is what is evaluated and kept; training steps the live weights.
        ema = AveragedModel(self.net, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema)) if cfg.ema else None
        kept = ema.module if ema else self.net
        gen = torch.Generator().manual_seed(cfg.seed)
        ckpt = Path(cfg.checkpoint_dir) / CHECKPOINT_FILE if cfg.checkpoint_dir else None
        first = 1
        if resume and ckpt.is_file():
            first = self._restore(ckpt, selector, optimizer, scheduler, gen, ema) + 1
        for epoch in range(first, cfg.max_epochs + 1):
            if selector.should_stop:
                break
            start = time.perf_counter()
            self.net.train()
            loss_sum = 0.0
            for batch in tqdm(self._batches(lengths, gen), desc=f"bilstm-crf epoch {epoch}", unit="batch", leave=False):
                x, blen = self._pad([x_train[i] for i in batch])
                y = nn.utils.rnn.pad_sequence([y_train[i] for i in batch], batch_first=True).to(device)
                x = x.to(device)
                mask = torch.arange(x.size(1), device=device) < blen.to(device)[:, None]
                emissions = self.net.emissions(x, blen, context=self._context_batch(c_train, batch))
                loss = self.net.crf.nll(emissions, y, mask).mean()
                optimizer.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(self.net.parameters(), cfg.clip)
                optimizer.step()
                scheduler.step()
                if ema:
                    ema.update_parameters(self.net)
                loss_sum += loss.item() * len(batch)
            selector.end_epoch(epoch, time.perf_counter() - start, loss_sum / len(train),
                               lambda role: self._spans(x_held[role], kept), lambda: copy.deepcopy(kept.state_dict()))
            if ckpt:
                self._checkpoint(ckpt, epoch, selector, optimizer, scheduler, gen, ema)
        self.net.load_state_dict(selector.best_state)
        if cfg.recall_bias is None:
            self.config.recall_bias = self._choose_recall_bias(selector, x_held["valid"])
        self.train_seconds = total_seconds(self.history)
        return self

    def _spans(self, held: tuple, net) -> list[list[Span]]:
        """Spans for ``held``, a pair of encoded texts and their encoder features (or None)."""
        return [bio_to_spans(t) for t in self._decode(held[0], net, held[1])]

    def _choose_recall_bias(self, selector: EpochSelector, x_valid) -> float:
        """The ``RECALL_BIASES`` value with the best held-out F1 (0 without held-out examples)."""
        if not selector.valid:
            return 0.0
        scores = {}
        for bias in RECALL_BIASES:
            self.config.recall_bias = bias
            scores[bias] = score(selector.valid, self._spans(x_valid, self.net)).f1
        best = max(RECALL_BIASES, key=lambda b: (scores[b], -b))  # ties: the smaller bias
        log.info("bilstm-crf recall_bias %s chosen on %d held-out sentences (F1 %s)", best, len(selector.valid),
                 ", ".join(f"{b}: {f:.4f}" for b, f in scores.items()))
        return best

    # --- checkpoints ------------------------------------------------------------------------
    def _checkpoint(self, path: Path, epoch: int, selector: EpochSelector, optimizer, scheduler,
                    gen: torch.Generator, ema: AveragedModel | None) -> None:
        """Everything a resumed run needs to continue exactly where this one is now."""
        path.parent.mkdir(parents=True, exist_ok=True)
        blob = {
            "epoch": epoch, **selector.state(),
            "config": learned_config(self),
            "model": self.net.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "torch_rng": torch.get_rng_state(), "shuffle_rng": gen.get_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "history": [asdict(r) for r in self.history],
            "ema": ema.state_dict() if ema else None,
        }
        tmp = path.with_suffix(".tmp")
        torch.save(blob, tmp)
        os.replace(tmp, path)  # atomic: an interruption never leaves a half-written checkpoint

    def _restore(self, path: Path, selector: EpochSelector, optimizer, scheduler, gen: torch.Generator,
                 ema: AveragedModel | None) -> int:
        """Load the interrupted run's state; the number of the last epoch it finished."""
        blob = torch.load(path, map_location=self.device, weights_only=True)
        check_resumable(self, blob["config"], path)
        self.net.load_state_dict(blob["model"])
        optimizer.load_state_dict(blob["optimizer"])
        scheduler.load_state_dict(blob["scheduler"])
        if ema:
            ema.load_state_dict(blob["ema"])
        torch.set_rng_state(blob["torch_rng"].cpu())
        gen.set_state(blob["shuffle_rng"].cpu())
        if blob["cuda_rng"]:
            torch.cuda.set_rng_state_all([s.cpu() for s in blob["cuda_rng"]])
        selector.restore(blob, [EpochRecord.from_dict(r) for r in blob["history"]])
        log.info("bilstm-crf resumed from %s after epoch %d", path, blob["epoch"])
        return blob["epoch"]

    # --- persistence ------------------------------------------------------------------------
    def _save(self, directory: Path) -> None:
        if self.net is None:
            raise RuntimeError("cannot save an untrained BiLSTM-CRF")
        torch.save(self.net.state_dict(), directory / MODEL_FILE)
        vocab = {"chars": self.vocab.chars, "bigrams": self.vocab.bigrams, "pos": self.vocab.pos,
                 "morphemes": self.vocab.morphemes, "kiwi_model": self.vocab.kiwi_model, "gaz": self.vocab.gaz,
                 **({"lex": self.vocab.lex} if self.vocab.lex else {})}  # without the lexicon, the file is as before
        (directory / VOCAB_FILE).write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
        for table in (self.gazetteer, self.lexicon):
            if table:
                table.save(directory)
        for encoder, name in ((self.context, ENCODER_DIR), (self.context2, ENCODER2_DIR)):
            if encoder:
                encoder.save(directory, name)

    @classmethod
    def _load(cls, directory: Path, config: BiLSTMCRFConfig) -> "BiLSTMCRFTagger":
        tagger = cls(config)
        tagger.vocab = Vocab(**json.loads((directory / VOCAB_FILE).read_text(encoding="utf-8")))
        if tagger.vocab.kiwi_model not in (None, kiwi_model_version()):
            log.warning("%s was trained with Kiwi model %s, this is %s: its Kiwi morpheme vectors will be "
                        "read for the wrong morphemes; install kiwipiepy_model==%s", directory,
                        tagger.vocab.kiwi_model, kiwi_model_version(), tagger.vocab.kiwi_model)
        tagger.gazetteer = Gazetteer.load(directory) if config.gazetteer_dim else None
        tagger.lexicon = Lexicon.load(directory) if config.lexicon_dim else None
        if config.encoder:
            tagger.context = ContextEncoder.load(directory, config.encoder_layers, config.encoder_norm,
                                                 echo=config.encoder_echo).to(tagger.device)
        if config.encoder2:
            tagger.context2 = ContextEncoder.load(directory, config.encoder_layers, config.encoder_norm,
                                                  name=ENCODER2_DIR).to(tagger.device)
        tagger.net = Network(config, tagger.vocab, tagger.tags, [e.dim for e in tagger._encoders()])
        tagger.net.load_state_dict(torch.load(directory / MODEL_FILE, map_location="cpu", weights_only=True))
        tagger.net.to(tagger.device)
        return tagger
