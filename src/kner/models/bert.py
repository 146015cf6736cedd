"""Any Hugging Face encoder (BERT, RoBERTa, XLM-R, E5…) fine-tuned for token classification.

Characters are the truth: each subword is labelled from the characters it covers (offsets from
the fast tokenizer, never decoded strings, so ``[UNK]`` cannot shift anything), and predictions
go back to characters and then to spans over the original text, so a boundary inside a subword
is scored as the error it is. Texts longer than the model's window are cut into overlapping
windows for training and prediction, and every token is predicted from the window where it has
the most context (:func:`kner.align.owner_window`).

Prediction is three steps, so another runtime (ONNX) can replace the middle one:
:meth:`WindowEncoder.encode` + :func:`length_sorted_batches` -> :meth:`BertTagger._logits`
(numpy in, numpy out; :meth:`BertTagger.use_network` swaps it) -> :func:`decode_spans`.
"""
from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from copy import deepcopy
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm
from transformers import TrainerCallback

from ..align import (best_valid_iob2, bio_labels, bio_to_spans, bridge_uncovered, chars_from_token_tags, owner_window,
                     piece_offsets, piece_words, spans_to_bio, split_pieces, token_tags_from_chars, trim_offsets, windows)
from ..distributed import is_main_process, world_size
from ..morphology import morpheme_starts
from ..types import Example, Span
from . import hf_common, trainer_checkpoints, vocab_trim
from .base import Tagger
from .selection import EpochSelector, total_seconds

log = logging.getLogger(__name__)
PRETOKENIZERS = ("auto", "none", "morphemes")
IGNORE = -100  # label id the loss skips (special and padding tokens, tokens covering only spaces)


@dataclass
class BertTaggerConfig:
    base_model: str = "klue/bert-base"
    """Encoder to fine-tune: a Hugging Face hub id or a local folder (read from local files only
    when HF_HUB_OFFLINE is set or the name is a folder)."""
    max_length: int = 128
    """Tokens per window, special tokens included; longer texts become overlapping windows."""
    stride: int = 32
    """Tokens shared by consecutive windows of a long text."""
    lr: float = 5e-5
    """AdamW peak learning rate (KLUE paper recipe)."""
    batch_size: int = 32
    """Training windows per optimiser step over all processes together (split across DDP ranks)."""
    epochs: int = 5
    """Training epochs; the epoch with the best validation F1 is kept."""
    warmup_ratio: float = 0.1
    """Fraction of the steps spent warming the learning rate up (then linear decay to 0)."""
    weight_decay: float = 0.01
    """AdamW weight decay."""
    seed: int = 42
    """Seed for the classifier initialisation, dropout and shuffling."""
    pretokenize: str = "auto"
    """morphemes: subwords never cross a Kiwi morpheme boundary (서울에서 -> ▁서울 | 에서, not
    ▁서울에서), so an entity boundary almost never falls inside a subword (docs/experiments.md).
    Word starts keep their ``▁`` and morphemes inside a word get none, as on raw text, so the
    model sees familiar subwords. Needs a SentencePiece (Metaspace) tokenizer. none: the
    tokenizer reads the raw text. auto: morphemes where the tokenizer allows it, else none."""
    freeze_embeddings: bool = False
    """Keep the word-embedding matrix fixed: much less optimiser work for large vocabularies
    (XLM-R's 250k rows are most of e5-small's weights), usually at little cost in F1."""
    trim_vocab: bool = False
    """Keep only the subwords the training text uses, plus special and single-character pieces,
    and drop the other embedding rows: e5-small's 250k rows become about 18k on KLUE, so the
    embeddings train cheaply and the model saves small (SentencePiece and BPE tokenizers)."""
    group_by_length: bool = True
    """Batch windows of similar length together (less padding, faster epochs)."""
    precision: str = "auto"
    """auto: bf16 (fp16 where unsupported) on a GPU; on a CPU, fp32 training and bf16 inference where
    the CPU has bf16 instructions (AVX512-BF16 or AMX; same F1, faster: docs/experiments.md), else
    fp32. fp32, bf16 or fp16 (GPU only) set both."""
    predict_batch_size: int = 32
    """Windows per inference batch (sorted by length, so little padding)."""
    constrained: bool = True
    """Decode each window's subword tags as the best valid IOB2 sequence (Viterbi) rather than
    per-subword argmax, whose orphan I- tags are no entity."""
    device: str = "auto"
    """cpu, cuda, or auto (cuda when available; each torchrun rank takes its LOCAL_RANK GPU)."""
    num_threads: int = 0
    """torch CPU threads during fit/predict; 0 = torch's default."""
    checkpoint_dir: str | None = None
    """Save a resumable checkpoint here after every epoch (only the newest is kept); None or '' = none.
    kner train sets OUT/checkpoints."""
    resume: bool = False
    """Continue from checkpoint_dir's newest checkpoint if there is one (same result as uninterrupted)."""


# --- encoding: texts -> subword windows -------------------------------------------------------

@dataclass
class Encoded:
    """One text's subwords (without special tokens) and the windows that cover them."""

    ids: list[int]
    offsets: list[tuple[int, int]]  # character range of each subword, whitespace trimmed
    wins: list[tuple[int, int]]  # [start, end) subword ranges, overlapping by `stride`


class WindowEncoder:
    """Tokenizes texts once with offsets and cuts them into model-sized windows. The special
    tokens around a window are learned from the tokenizer itself (``[CLS] … [SEP]``,
    ``<s> … </s>``…), so any single-sequence template works."""

    def __init__(self, tokenizer, max_length: int, stride: int, pretokenize: str = "auto") -> None:
        if pretokenize not in PRETOKENIZERS:
            raise ValueError(f"pretokenize must be one of {', '.join(PRETOKENIZERS)}, not {pretokenize!r}")
        if not getattr(tokenizer, "is_fast", False):
            raise ValueError(f"{type(tokenizer).__name__} is not a fast tokenizer; character offsets need one "
                             "(a tokenizer.json), so pick a model that ships it")
        self.tokenizer = tokenizer
        self.piece_tokenizer = piece_tokenizer(tokenizer) if pretokenize != "none" else None
        if pretokenize == "morphemes" and self.piece_tokenizer is None:
            raise ValueError(f"pretokenize 'morphemes' needs a SentencePiece tokenizer (a Metaspace pre-tokenizer); "
                             f"this one is {type(tokenizer).__name__} without one; use pretokenize 'none'")
        probe = tokenizer("a", add_special_tokens=False)["input_ids"]
        full = tokenizer("a")["input_ids"]
        k = next(k for k in range(len(full)) if full[k : k + len(probe)] == probe)
        self.prefix, self.suffix = full[:k], full[k + len(probe) :]
        self.size = max_length - len(self.prefix) - len(self.suffix)
        if self.size <= stride:
            raise ValueError(f"max_length {max_length} leaves {self.size} tokens per window after the special "
                             f"tokens, which must exceed stride {stride}; raise max_length or lower stride")
        self.stride = stride
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    def pieces(self, texts: Sequence[str]) -> list[list[tuple[int, int]]] | None:
        """The morphemes (character ranges) each text is cut into before subword tokenization
        (:attr:`piece_tokenizer` reads them as :func:`~kner.align.piece_words`), or ``None`` when
        the tokenizer reads raw text."""
        if self.piece_tokenizer is None:
            return None
        return [split_pieces(text, starts) for text, starts in zip(texts, morpheme_starts(texts))]

    def encode(self, texts: Sequence[str]) -> list[Encoded]:
        texts, kw = list(texts), {"add_special_tokens": False, "return_offsets_mapping": True, "verbose": False}
        pieces = self.pieces(texts)
        if pieces is None:
            batch = self.tokenizer(texts, **kw)
            offsets = batch["offset_mapping"]
        else:  # offsets come per word; a blank text has no word, and the tokenizer wants one
            words = [piece_words(t, p) for t, p in zip(texts, pieces)]
            batch = self.piece_tokenizer([w or [""] for w in words], is_split_into_words=True, **kw)
            offsets = [piece_offsets(p, w, batch.word_ids(i), o) if p else []
                       for i, (p, w, o) in enumerate(zip(pieces, words, batch["offset_mapping"]))]
        out = []
        for text, ids, offs in zip(texts, batch["input_ids"], offsets):
            ids = ids if offs else []
            out.append(Encoded(ids, trim_offsets(text, offs), windows(len(ids), self.size, self.stride) if ids else []))
        return out

    def window_ids(self, enc: Encoded, w: int) -> list[int]:
        s, e = enc.wins[w]
        return self.prefix + enc.ids[s:e] + self.suffix

    def window_labels(self, enc: Encoded, w: int, token_label_ids: list[int]) -> list[int]:
        s, e = enc.wins[w]
        return [IGNORE] * len(self.prefix) + token_label_ids[s:e] + [IGNORE] * len(self.suffix)


def piece_tokenizer(tokenizer):
    """A copy of a SentencePiece-style fast tokenizer that reads pre-split words (see
    :func:`~kner.align.piece_words`) as one text: ``▁`` only where a word brings its own leading
    space, none before a morpheme inside a word. ``None`` when ``tokenizer`` has no Metaspace
    pre-tokenizer (WordPiece, byte-level BPE)."""
    from tokenizers import pre_tokenizers

    spec = json.loads(tokenizer.backend_tokenizer.to_str()).get("pre_tokenizer") or {}
    metaspace = [p for p in spec.get("pretokenizers", [spec]) if p.get("type") == "Metaspace"]
    if not metaspace:
        return None
    copy = deepcopy(tokenizer)
    copy.backend_tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(
        replacement=metaspace[0].get("replacement", "▁"), prepend_scheme="never", split=True)
    return copy


def length_sorted_batches(seqs: Sequence[Sequence[int]], batch_size: int, pad_id: int
                          ) -> Iterator[tuple[list[int], dict[str, np.ndarray]]]:
    """Longest first, padded only to the longest in each batch: ``(indices, {"input_ids",
    "attention_mask"})`` with int64 arrays of shape (batch, seq)."""
    order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i]))
    for s in range(0, len(order), batch_size):
        idx = order[s : s + batch_size]
        width = len(seqs[idx[0]])
        ids = np.full((len(idx), width), pad_id, dtype=np.int64)
        mask = np.zeros((len(idx), width), dtype=np.int64)
        for row, i in enumerate(idx):
            ids[row, : len(seqs[i])] = seqs[i]
            mask[row, : len(seqs[i])] = 1
        yield idx, {"input_ids": ids, "attention_mask": mask}


def decode_spans(text: str, enc: Encoded, window_tags: Sequence[Sequence[str]]) -> list[Span]:
    """Merge each window's subword tags (content tokens only) into one tag per subword, taken
    from the window where the subword has the most context, then to characters and spans."""
    if not enc.wins:
        return []
    owners = owner_window(enc.wins)
    token_tags = [window_tags[w][t - enc.wins[w][0]] for t, w in enumerate(owners)]
    char_tags = chars_from_token_tags(len(text), token_tags, enc.offsets)
    return bio_to_spans(bridge_uncovered(char_tags, enc.offsets))


# --- the tagger ------------------------------------------------------------------------------

class BertTagger(Tagger):
    """Pretrained encoder + linear token classifier, fine-tuned with the transformers Trainer."""

    family = "bert"
    epoch_trained = True
    Config = BertTaggerConfig
    runtime_settings = ("precision", "predict_batch_size", "constrained", "pretokenize", "device", "num_threads")

    def __init__(self, config: BertTaggerConfig | None = None, **overrides) -> None:
        super().__init__(config, **overrides)
        if self.config.stride < 0:
            raise ValueError(f"stride must be >= 0, not {self.config.stride}")
        if not 0 <= self.config.warmup_ratio < 1:
            raise ValueError(f"warmup_ratio must be in [0, 1), not {self.config.warmup_ratio}")
        self.device = hf_common.pick_device(self.config.device)
        self.precision = hf_common.pick_precision(self.config.precision, self.device, cpu_bf16=True)
        self.train_precision = hf_common.pick_precision(self.config.precision, self.device)  # bf16 training on a CPU is unmeasured
        self.tags = bio_labels(self.labels)
        self.model = None
        self.tokenizer = None
        self.encoder: WindowEncoder | None = None
        self.backend = "torch"
        self._network: Callable[[dict[str, np.ndarray]], np.ndarray] | None = None

    def _attach(self, tokenizer, model) -> None:
        self.tokenizer, self.model = tokenizer, model.to(self.device)
        self.backend, self._network = "torch", None  # a fresh torch model runs in torch
        self.tags = [model.config.id2label[i] for i in range(model.config.num_labels)]
        self.encoder = WindowEncoder(tokenizer, self.config.max_length, self.config.stride, self.config.pretokenize)
        limit = model.config.max_position_embeddings
        if model.config.model_type in ("roberta", "xlm-roberta", "camembert"):
            limit -= model.config.pad_token_id + 1  # their position ids start after the padding index
        if self.config.max_length > limit:
            raise ValueError(f"max_length {self.config.max_length} exceeds the {limit} positions "
                             f"{self.config.base_model} was trained with; lower max_length")

    # --- prediction: encode -> _logits -> decode -----------------------------------------
    def use_network(self, backend: str, logits: Callable[[dict[str, np.ndarray]], np.ndarray]) -> None:
        """Run the network through ``logits`` (same contract as :meth:`_logits`), e.g. an
        onnxruntime session (:func:`kner.onnx_backend.load_onnx`), named ``backend``. Encoding,
        batching and decoding stay this class's, so the spans are decided by the same code. The
        torch weights move to the meta device (shapes only), leaving memory to the other copy."""
        self.model.to("meta")
        self.backend, self._network = backend, logits

    def _logits(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        """(batch, seq) int64 ``input_ids``/``attention_mask`` -> (batch, seq, labels) float32
        scores. The one step that touches the network: :meth:`use_network` replaces only this."""
        if self._network is not None:
            return self._network(batch)
        inputs = {k: torch.from_numpy(v).to(self.device) for k, v in batch.items()}
        with torch.inference_mode(), hf_common.autocast(self.device, self.precision):
            logits = self.model(**inputs).logits  # (batch, seq, labels)
        return logits.float().cpu().numpy()

    def _window_tags(self, encoded: Sequence[Encoded]) -> list[list[list[str]]]:
        """Per text, per window: the predicted tag of each content subword."""
        flat = [(t, w) for t, enc in enumerate(encoded) for w in range(len(enc.wins))]
        seqs = [self.encoder.window_ids(encoded[t], w) for t, w in flat]
        out: list[list[list[str]]] = [[[] for _ in enc.wins] for enc in encoded]
        bs, lead = self.config.predict_batch_size, len(self.encoder.prefix)
        batches = length_sorted_batches(seqs, bs, self.encoder.pad_id)
        for idx, batch in tqdm(batches, total=-(-len(seqs) // bs), desc="bert predict", leave=False,
                               disable=len(seqs) <= 4 * bs):
            logits = self._logits(batch)  # (batch, seq, labels)
            log_probs = logits - np.logaddexp.reduce(logits, axis=-1, keepdims=True)
            for row, i in enumerate(idx):
                t, w = flat[i]
                s, e = encoded[t].wins[w]
                window = log_probs[row, lead : lead + e - s]  # (content subwords, labels)
                out[t][w] = (best_valid_iob2(window, self.tags) if self.config.constrained
                             else [self.tags[k] for k in window.argmax(-1)])
        return out

    def _predict(self, texts: list[str]) -> list[list[Span]]:
        if self.model is None:
            raise RuntimeError("this BERT tagger is not trained yet: call fit() or kner.load() first")
        self.model.eval()
        with hf_common.threads(self.config.num_threads):
            encoded = self.encoder.encode(texts)
            return [decode_spans(text, enc, tags) for text, enc, tags in zip(texts, encoded, self._window_tags(encoded))]

    # --- training --------------------------------------------------------------------------
    def _features(self, examples: Sequence[Example]) -> list[dict[str, list[int]]]:
        """One training item per window: input ids and a label id per subword (IGNORE for special
        tokens and subwords covering no character)."""
        index = {t: i for i, t in enumerate(self.tags)}
        items = []
        for ex, enc in zip(examples, self.encoder.encode([ex.text for ex in examples])):
            try:
                char_tags = spans_to_bio(ex.text, ex.spans)
                labels = [IGNORE if t is None else index[t] for t in token_tags_from_chars(char_tags, enc.offsets)]
            except KeyError as exc:
                raise ValueError(f"example {ex.id or ex.text[:30]!r} has label {str(exc)[3:-1]!r}; "
                                 f"this model knows {self.labels}") from exc
            for w in range(len(enc.wins)):
                ids = self.encoder.window_ids(enc, w)
                items.append({"input_ids": ids, "attention_mask": [1] * len(ids),
                              "labels": self.encoder.window_labels(enc, w, labels)})
        return items

    def fit(self, train: Sequence[Example], valid: Sequence[Example] | None = None) -> "BertTagger":
        from transformers import (AutoModelForTokenClassification, AutoTokenizer, DataCollatorForTokenClassification,
                                  Trainer, TrainingArguments, set_seed)

        cfg = self.config
        train = [ex for ex in train if ex.text.strip()]
        if not train:
            raise ValueError("fit needs at least one non-blank training example")
        with hf_common.threads(cfg.num_threads):
            set_seed(cfg.seed)  # the classifier head is initialised at load time
            local = hf_common.local_only(cfg.base_model)
            tags = bio_labels(self.labels)
            tokenizer = AutoTokenizer.from_pretrained(cfg.base_model, local_files_only=local)
            model = AutoModelForTokenClassification.from_pretrained(  # fp32 master weights, whatever the checkpoint's
                cfg.base_model, local_files_only=local, dtype=torch.float32, num_labels=len(tags),
                id2label=dict(enumerate(tags)), label2id={t: i for i, t in enumerate(tags)})
            self._attach(tokenizer, model)
            items = self._features(train)
            if cfg.trim_vocab:  # the kept pieces segment the training text as before, so only the ids change
                keep = vocab_trim.kept_ids(tokenizer, {i for item in items for i in item["input_ids"]})
                tokenizer, model = vocab_trim.trim(tokenizer, model.cpu(), keep)
                self._attach(tokenizer, model)
                new_id = vocab_trim.id_map(keep)
                items = [{**item, "input_ids": [new_id[i] for i in item["input_ids"]]} for item in items]
            if cfg.freeze_embeddings:
                self.model.get_input_embeddings().weight.requires_grad_(False)
            per_device = max(1, cfg.batch_size // world_size())
            selector = EpochSelector(self, valid)
            resume_from, finished = trainer_checkpoints.resume(self, selector)
            with trainer_checkpoints.trainer_settings(self) as saving:
                args = TrainingArguments(
                    **saving, per_device_train_batch_size=per_device,
                    learning_rate=cfg.lr, num_train_epochs=cfg.epochs, warmup_steps=cfg.warmup_ratio,
                    weight_decay=cfg.weight_decay, lr_scheduler_type="linear", seed=cfg.seed, logging_strategy="epoch",
                    eval_strategy="no", report_to="none", use_cpu=self.device.type == "cpu",
                    fp16=self.train_precision == "fp16", bf16=self.train_precision == "bf16",
                    train_sampling_strategy="group_by_length" if cfg.group_by_length else "random",
                    ddp_find_unused_parameters=False, disable_tqdm=not is_main_process())
                trainer = Trainer(model=self.model, args=args, train_dataset=items, processing_class=tokenizer,
                                  data_collator=DataCollatorForTokenClassification(tokenizer),
                                  callbacks=[_EpochLog(self, selector), trainer_checkpoints.SaveSelector(selector)])
                if not finished:
                    trainer.train(resume_from_checkpoint=resume_from)
            if selector.best_state is not None:
                self.model.load_state_dict(selector.best_state)
        self.model.eval()
        self.train_seconds = total_seconds(self.history)
        return self

    # --- the model directory -----------------------------------------------------------------
    def _save(self, directory: Path) -> None:
        if self.model is None:
            raise RuntimeError("cannot save an untrained BERT tagger")
        if self._network is not None:
            raise RuntimeError(f"this tagger runs in {self.backend} without its torch weights; "
                               "save (or copy) the run directory it was loaded from")
        self.model.save_pretrained(directory)
        self.tokenizer.save_pretrained(directory)

    @classmethod
    def _load(cls, directory: Path, config: BertTaggerConfig) -> "BertTagger":
        from transformers import AutoModelForTokenClassification, AutoTokenizer

        tagger = cls(config)
        tagger._attach(AutoTokenizer.from_pretrained(directory, local_files_only=True),
                       AutoModelForTokenClassification.from_pretrained(directory, local_files_only=True))
        tagger.model.eval()
        return tagger


class _EpochLog(TrainerCallback):
    """At each epoch's training-loss log (``logging_strategy="epoch"``), rank 0 hands the epoch to
    the :class:`EpochSelector`, which scores the held-out examples and keeps the best weights.
    Other ranks only train."""

    def __init__(self, tagger: BertTagger, selector: EpochSelector) -> None:
        self.tagger, self.selector = tagger, selector
        self.started = time.perf_counter()

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.started = time.perf_counter()

    def on_epoch_end(self, args, state, control, **kwargs):
        stop_after = self.tagger.refit_epochs  # read on every rank, so that all of them stop together
        if stop_after is not None and round(state.epoch) >= stop_after:
            control.should_training_stop = True

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or "loss" not in logs or "train_loss" in logs or not state.is_world_process_zero:
            return
        tagger, seconds = self.tagger, time.perf_counter() - self.started
        self.selector.end_epoch(round(state.epoch), seconds, float(logs["loss"]),
                                lambda role: tagger.predict(self.selector.texts(role)),
                                lambda: {k: v.detach().to("cpu", copy=True) for k, v in tagger.model.state_dict().items()})
        tagger.model.train()  # predict switched dropout off
