"""A small causal language model fine-tuned to rewrite a sentence with inline entity markup.

Prompt: a short Korean instruction naming the six types, then the sentence (inside the
tokenizer's chat template when it has one). Target: the same sentence with markup,
``<이순신:PS> 장군은 …``, escaped by :func:`kner.align.to_markup` (``\\<``, ``\\>``, ``\\\\``) so
that a ``<`` in the text is never mistaken for markup. The loss covers the target only.

Prediction is greedy and, by default, constrained (:mod:`kner.models.sllm_decode`): the output
can only be this exact sentence with well-formed markup, so every output becomes spans over the
input; the copied text is checked several tokens per forward pass (``draft_tokens``), which
changes the speed, not the output. Unconstrained decoding (``constrained=False``) is read by a
tolerant parser, and :attr:`SLLMTagger.last_parse_failures` counts the outputs it had to repair.

The model directory holds the LoRA adapter (or, with ``lora=False``, the full weights), the
tokenizer, ``prompt.json`` and ``kner.json``. A LoRA directory names its base model in the
config (``base_model``) and loads it from there: the adapter is a few MB instead of a copy of the
base weights, and base weights under terms like Gemma's are not passed on with every model.
"""
from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm
from transformers import Trainer, TrainerCallback

from ..align import to_markup
from ..scoring import score
from ..types import Example, Span
from . import hf_common, trainer_checkpoints
from .base import Tagger
from .selection import EpochSelector, total_seconds
from .sllm_decode import MarkupAutomaton, TokenTable, chunks, greedy, read_output

log = logging.getLogger(__name__)
IGNORE = -100
PROMPT_FILE = "prompt.json"
INSTRUCTION = ("문장의 개체명을 <개체명:유형>으로 표시하세요. 유형: PS 인물, LC 지명, OG 기관, DT 날짜, TI 시간, QT 수량.")


@dataclass
class SLLMConfig:
    base_model: str = "Qwen/Qwen2.5-0.5B-Instruct"
    """Causal LM to fine-tune: hub id or local folder. Default: Qwen2.5 0.5B Instruct, which
    reads Korean, has a chat template and a byte-level BPE (every character writable), is
    Apache-2.0 and ungated, and fine-tunes with LoRA on one consumer GPU (or slowly on a CPU)."""
    instruction: str = INSTRUCTION
    """The instruction before each sentence (part of the saved prompt format)."""
    lora: bool = True
    """Train a LoRA adapter (peft); False fine-tunes every weight."""
    lora_rank: int = 16
    """LoRA rank r."""
    lora_alpha: int = 32
    """LoRA scaling alpha."""
    lora_dropout: float = 0.05
    """Dropout on the LoRA input."""
    lora_targets: str = "all-linear"
    """Modules LoRA adapts: 'all-linear' or comma-separated names (e.g. q_proj,v_proj)."""
    lr: float = 2e-4
    """AdamW peak learning rate."""
    epochs: int = 2
    """Training epochs; the epoch with the best validation F1 is kept."""
    batch_size: int = 8
    """Training sequences per optimiser step."""
    warmup_ratio: float = 0.03
    """Fraction of the steps spent warming the learning rate up (then linear decay)."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    max_train_minutes: float = 0.0
    """Stop training after this many minutes (the epoch under way is cut short and scored; a resumed run
    counts the epochs it resumes after; a run the budget stopped is finished, and resuming it trains no
    more); 0 = no limit."""
    eval_limit: int = 200
    """Validation sentences decoded after each epoch to pick the best epoch; 0 skips it."""
    constrained: bool = True
    """Constrained decoding (output is always this sentence with valid markup)."""
    draft_tokens: int = 8
    """Constrained decoding checks up to this many tokens that copy the input in one forward pass,
    keeping them up to the model's first other choice (same output); 0 = one forward pass per token."""
    max_chars: int = 300
    """Longer texts are cut at sentence ends or whitespace into pieces of at most this many characters."""
    predict_batch_size: int = 16
    """Text pieces generated together."""
    seed: int = 42
    """Seed for LoRA initialisation, dropout and shuffling."""
    precision: str = "auto"
    """auto (bf16 or fp16 on GPU, fp32 on CPU), fp32, fp16 or bf16. Not bf16 on a CPU by default:
    it changes enough outputs to move F1 by more than 0.002 (docs/experiments.md)."""
    device: str = "auto"
    """cpu, cuda or auto."""
    num_threads: int = 0
    """torch CPU threads during fit/predict; 0 = torch's default."""
    checkpoint_dir: str | None = None
    """Save a resumable checkpoint here after every epoch (only the newest is kept); None or '' = none.
    kner train sets OUT/checkpoints."""
    resume: bool = False
    """Continue from checkpoint_dir's newest checkpoint if there is one (same result as uninterrupted)."""


class SLLMTagger(Tagger):
    """Generative NER: a causal LM rewrites each sentence with ``<surface:TYPE>`` markup."""

    family = "sllm"
    epoch_trained = True
    Config = SLLMConfig
    runtime_settings = ("precision", "predict_batch_size", "constrained", "draft_tokens", "device", "num_threads")
    # Generation makes each pass over 500 dev sentences take minutes on a CPU.
    benchmark_limits = {"train": 2000, "dev": 500, "repeats": 1, "latency_samples": 20}

    def __init__(self, config: SLLMConfig | None = None, **overrides) -> None:
        super().__init__(config, **overrides)
        if self.config.max_chars < 1:
            raise ValueError(f"max_chars must be at least 1, not {self.config.max_chars}")
        self.device = hf_common.pick_device(self.config.device)
        self.precision = hf_common.pick_precision(self.config.precision, self.device)
        self.model = None
        self.tokenizer = None
        self.table: TokenTable | None = None
        self.last_parse_failures = 0
        """Outputs of the last predict call that were not exact markup of their input."""
        self.last_generated_tokens = 0
        self.last_forward_passes = 0
        """Forward passes of the model in the last predict call (one per batch and step, prompts included)."""

    # --- prompt format ---------------------------------------------------------------------------
    def _attach(self, tokenizer, model) -> None:
        self.tokenizer, self.model = tokenizer, model.to(self.device)
        self.table = TokenTable(tokenizer)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        if tokenizer.eos_token_id is None:
            raise ValueError(f"{self.config.base_model}'s tokenizer has no eos token to end the target with")
        stops = model.generation_config.eos_token_id if model.generation_config is not None else None
        self.stop_ids = {tokenizer.eos_token_id} | set(stops if isinstance(stops, list) else [stops] if stops is not None else [])

    def prompt_ids(self, text: str) -> list[int]:
        """Token ids of the prompt for ``text``; generation continues right after them."""
        content = f"{self.config.instruction}\n{text}"
        if self.tokenizer.chat_template:
            prompt = self.tokenizer.apply_chat_template([{"role": "user", "content": content}], tokenize=False,
                                                        add_generation_prompt=True)
            return self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        return self.tokenizer(content + "\n")["input_ids"]

    def target_ids(self, example: Example) -> list[int]:
        markup = to_markup(example.text, example.spans)
        return self.tokenizer(markup, add_special_tokens=False)["input_ids"] + [self.tokenizer.eos_token_id]

    def benchmark_extras(self, dev: list[Example]) -> dict:
        """``kner benchmark``'s side-by-side of constrained (per token and with one-pass verification)
        and unconstrained decoding on its dev slice."""
        result = compare_decoding(self, dev)
        rows = {name: result[name] for name in DECODINGS}
        rows[ONE_PASS]["same_spans_as_per_token"] = result["same_spans_as_per_token"]
        return rows

    # --- prediction ----------------------------------------------------------------------------
    def _generate(self, texts: list[str], constrained: bool, draft_tokens: int,
                  batch_size: int | None = None) -> tuple[list[list[Span]], int, int, int]:
        """Spans per text, outputs that needed repair, tokens generated, forward passes. Texts are
        cut into pieces of at most ``max_chars``; pieces are generated longest first in batches
        of ``batch_size`` (default: the config's ``predict_batch_size``)."""
        pieces = [(t, off, piece) for t, text in enumerate(texts) for off, piece in chunks(text, self.config.max_chars)
                  if piece.strip()]
        prompts = [self.prompt_ids(piece) for _, _, piece in pieces]
        order = sorted(range(len(pieces)), key=lambda i: -len(prompts[i]))
        spans: list[list[Span]] = [[] for _ in texts]
        failures = generated = forwards = 0
        bs = batch_size or self.config.predict_batch_size
        batches = [order[s:s + bs] for s in range(0, len(order), bs)]
        for batch in tqdm(batches, desc="sllm predict", leave=False, disable=len(batches) <= 2):
            automata = [MarkupAutomaton(pieces[i][2], self.table, self.labels) for i in batch] if constrained else None
            budget = [2 * (len(prompts[i]) + 16) for i in batch]  # unconstrained: markup is about the text's length
            outputs, passes = greedy(self.model, [prompts[i] for i in batch], self.pad_id, automata, self.stop_ids, budget,
                                     draft_tokens)
            forwards += passes
            for i, out in zip(batch, outputs):
                t, off, piece = pieces[i]
                found, exact = read_output(self.table.text(out), piece, self.labels)
                failures += not exact
                generated += len(out)
                spans[t] += [Span(s.start + off, s.end + off, s.label) for s in found]
        return spans, failures, generated, forwards

    def _predict(self, texts: list[str]) -> list[list[Span]]:
        if self.model is None:
            raise RuntimeError("this sllm tagger is not trained yet: call fit() or kner.load() first")
        self.model.eval()
        with hf_common.threads(self.config.num_threads), hf_common.autocast(self.device, self.precision):
            spans, self.last_parse_failures, self.last_generated_tokens, self.last_forward_passes = self._generate(
                texts, self.config.constrained, self.config.draft_tokens)
        return spans

    # --- training ------------------------------------------------------------------------------
    def _features(self, examples: Sequence[Example]) -> list[dict[str, list[int]]]:
        items = []
        for ex in examples:
            for off, piece in chunks(ex.text, self.config.max_chars):
                inside = [Span(s.start - off, s.end - off, s.label) for s in ex.spans
                          if s.start >= off and s.end <= off + len(piece)]
                if piece.strip():
                    prompt = self.prompt_ids(piece)  # "input_ids" also lets group_by_length see the lengths
                    items.append({"input_ids": prompt + self.target_ids(Example(piece, tuple(inside))),
                                  "n_prompt": len(prompt)})
        return items

    def _load_base(self):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        cfg = self.config
        local = hf_common.local_only(cfg.base_model)
        tokenizer = AutoTokenizer.from_pretrained(cfg.base_model, local_files_only=local)
        # Frozen LoRA base weights can live in half precision on a GPU; trained weights stay fp32
        # (the Trainer's autocast runs the matmuls in bf16/fp16).
        half = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision) if cfg.lora else None
        model = AutoModelForCausalLM.from_pretrained(cfg.base_model, local_files_only=local, dtype=half or torch.float32)
        return tokenizer, model

    def _with_lora(self, model):
        from peft import LoraConfig, get_peft_model

        cfg = self.config
        targets = cfg.lora_targets if cfg.lora_targets == "all-linear" else [t.strip() for t in cfg.lora_targets.split(",")]
        return get_peft_model(model, LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                                                target_modules=targets, task_type="CAUSAL_LM"))

    def fit(self, train: Sequence[Example], valid: Sequence[Example] | None = None) -> "SLLMTagger":
        from transformers import TrainingArguments, set_seed

        cfg = self.config
        train = [ex for ex in train if ex.text.strip()]
        if not train:
            raise ValueError("fit needs at least one non-blank training example")
        valid = [ex for ex in valid or [] if ex.text.strip()][: cfg.eval_limit]
        with hf_common.threads(cfg.num_threads):
            set_seed(cfg.seed)
            tokenizer, model = self._load_base()
            self._attach(tokenizer, self._with_lora(model) if cfg.lora else model)
            items = self._features(train)
            selector = EpochSelector(self, valid)
            resume_from, finished = trainer_checkpoints.resume(self, selector)
            with trainer_checkpoints.trainer_settings(self) as saving:
                args = TrainingArguments(
                    **saving, per_device_train_batch_size=cfg.batch_size,
                    learning_rate=cfg.lr, num_train_epochs=cfg.epochs, warmup_steps=cfg.warmup_ratio,
                    weight_decay=cfg.weight_decay, lr_scheduler_type="linear", seed=cfg.seed, logging_strategy="no",
                    eval_strategy="no", report_to="none", use_cpu=self.device.type == "cpu",
                    fp16=self.precision == "fp16", bf16=self.precision == "bf16", remove_unused_columns=False,
                    train_sampling_strategy="group_by_length", disable_tqdm=False)
                epochs = _EpochLog(self, selector)
                trainer = _TargetOnlyTrainer(model=self.model, args=args, train_dataset=items,
                                             data_collator=_LeftPadCollator(self.pad_id),
                                             callbacks=[epochs, trainer_checkpoints.SaveSelector(selector)])
                epochs.trainer = trainer
                if not finished:
                    trainer.train(resume_from_checkpoint=resume_from)
            if selector.best_state is not None:
                self.model.load_state_dict(selector.best_state, strict=False)
        self.model.eval()
        self.train_seconds = total_seconds(self.history)
        return self

    # --- the model directory -------------------------------------------------------------------
    def _save(self, directory: Path) -> None:
        if self.model is None:
            raise RuntimeError("cannot save an untrained sllm tagger")
        self.model.save_pretrained(directory)  # LoRA: adapter_model.safetensors + adapter_config.json
        self.tokenizer.save_pretrained(directory)
        example = Example("이순신은 조선의 장군이다.", (Span(0, 3, "PS"), Span(5, 7, "LC")))
        (directory / PROMPT_FILE).write_text(json.dumps({
            "instruction": self.config.instruction, "chat_template": bool(self.tokenizer.chat_template),
            "target": "to_markup(text, spans): <surface:TYPE>, with \\ < > in the text backslash-escaped, then eos",
            "example_prompt": self.tokenizer.decode(self.prompt_ids(example.text)),
            "example_target": to_markup(example.text, example.spans)}, ensure_ascii=False, indent=2), encoding="utf-8")

    @classmethod
    def _load(cls, directory: Path, config: SLLMConfig) -> "SLLMTagger":
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tagger = cls(config)
        tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
        if not config.lora:
            model = AutoModelForCausalLM.from_pretrained(directory, local_files_only=True, dtype=torch.float32)
        else:
            from peft import PeftModel

            try:
                _, base = tagger._load_base()
            except OSError as exc:
                raise OSError(f"this LoRA model needs its base model {config.base_model!r}, which could not be loaded "
                              f"({exc}); make it available there") from exc
            model = PeftModel.from_pretrained(base, directory, local_files_only=True)
        tagger._attach(tokenizer, model)
        tagger.model.eval()
        return tagger


# --- training pieces ------------------------------------------------------------------------------

class _LeftPadCollator:
    """Prompt + target, left-padded so every target ends in the last column. Labels cover only
    the last K columns (K = longest target), so the loss needs the logits of K + 1 positions and
    the vocabulary projection skips the prompts (it dominates the cost with a 150-260k vocab)."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, items: list[dict]) -> dict[str, torch.Tensor]:
        width = max(len(it["input_ids"]) for it in items)
        k = max(len(it["input_ids"]) - it["n_prompt"] for it in items)
        ids = torch.full((len(items), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(items), width), dtype=torch.long)
        labels = torch.full((len(items), k), IGNORE, dtype=torch.long)
        for r, it in enumerate(items):
            seq, target = it["input_ids"], it["input_ids"][it["n_prompt"]:]
            ids[r, width - len(seq):] = torch.tensor(seq)
            mask[r, width - len(seq):] = 1
            labels[r, k - len(target):] = torch.tensor(target)
        return {"input_ids": ids, "attention_mask": mask, "position_ids": (mask.cumsum(-1) - 1).clamp(min=0),
                "labels": labels}


class _TargetOnlyTrainer(Trainer):
    """Cross-entropy on the target tokens only, from the logits of the last K + 1 positions."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.epoch_loss: list[torch.Tensor] = []  # detached per-step losses (no GPU sync per step)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels = inputs.pop("labels")  # (batch, K)
        out = model(**inputs, logits_to_keep=labels.shape[1] + 1)
        logits = out.logits[:, :-1]  # (batch, K, vocab): position t predicts token t + 1
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=IGNORE)
        if model.training:
            self.epoch_loss.append(loss.detach())
        return (loss, out) if return_outputs else loss


class _EpochLog(TrainerCallback):
    """After each epoch the :class:`EpochSelector` decodes the (capped) held-out examples, scores
    them and keeps a copy of the best trainable weights."""

    def __init__(self, tagger: SLLMTagger, selector: EpochSelector) -> None:
        self.tagger, self.selector, self.trainer = tagger, selector, None
        self.started = time.perf_counter()
        self.budget_started = self.started - total_seconds(tagger.history)  # a resumed run spent its epochs' time

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.started = time.perf_counter()
        self.trainer.epoch_loss = []

    def on_step_end(self, args, state, control, **kwargs):
        budget = self.tagger.config.max_train_minutes
        if budget and time.perf_counter() - self.budget_started > 60 * budget:
            control.should_training_stop = True  # the Trainer still ends the epoch, so it is scored

    def on_epoch_end(self, args, state, control, **kwargs):
        tagger, seconds = self.tagger, time.perf_counter() - self.started
        losses = self.trainer.epoch_loss
        mean_loss = torch.stack(losses).float().mean().item() if losses else float("nan")
        self.selector.end_epoch(round(state.epoch), seconds, mean_loss, lambda role: tagger.predict(self.selector.texts(role)),
                                lambda: {n: p.detach().to("cpu", copy=True) for n, p in tagger.model.named_parameters()
                                         if p.requires_grad})
        tagger.model.train()
        if tagger.refit_epochs is not None and round(state.epoch) >= tagger.refit_epochs:
            control.should_training_stop = True


# --- constrained vs unconstrained, side by side ---------------------------------------------------

PER_TOKEN, ONE_PASS = "constrained, per-token", "constrained, one-pass verification"
DECODINGS = {PER_TOKEN: (True, 0), ONE_PASS: (True, None), "unconstrained": (False, 0)}
"""Rows of :func:`compare_decoding`: constrained, draft tokens (None: the tagger's ``draft_tokens``)."""


BATCH_SIZES = (8, 16, 32, 64)
"""Batch sizes :func:`compare_decoding` tries for each decoding, on ``probe_sentences`` spread over its examples."""
PROBE_SENTENCES = 64


def compare_decoding(tagger: SLLMTagger, examples: Sequence[Example], batch_sizes: Sequence[int] = BATCH_SIZES,
                     decodings: Sequence[str] = tuple(DECODINGS), probe_sentences: int = PROBE_SENTENCES) -> dict:
    """F1 (:func:`kner.scoring.score`), outputs needing repair, sentences/s, generated tokens/s and
    forward passes per sentence of each of :data:`DECODINGS` on the same examples, in one run, each
    at the batch size that decoded a probe of examples spread evenly over them fastest (the
    speed-ups of the two methods peak at different batch sizes; the first examples alone may be
    longer or shorter than the rest; one batch size given is used without a probe).
    ``same_spans_as_per_token`` is the share of examples on which one-pass verification found
    exactly the spans of per-token decoding (1.0 in fp32; bf16 may round a block of tokens
    differently from one token at a time)."""
    examples = [ex for ex in examples if ex.text.strip()]
    texts = [ex.text for ex in examples]
    tagger.model.eval()
    out = {"n_sentences": len(texts), "device": str(tagger.device)}
    sample = texts[::max(1, len(texts) // probe_sentences)][:probe_sentences]

    def timed(subset: list[str], constrained: bool, draft: int, batch_size: int):
        start = time.perf_counter()
        result = tagger._generate(subset, constrained, draft, batch_size)
        return time.perf_counter() - start, result

    with hf_common.threads(tagger.config.num_threads), hf_common.autocast(tagger.device, tagger.precision):
        tagger._generate(texts[:2], True, tagger.config.draft_tokens)  # warm-up
        found = {}
        for name in decodings:
            constrained, draft = DECODINGS[name]
            draft = tagger.config.draft_tokens if draft is None else draft
            probe = {bs: timed(sample, constrained, draft, bs)[0] for bs in batch_sizes} if len(batch_sizes) > 1 else {}
            batch_size = min(probe, key=probe.get) if probe else batch_sizes[0]
            seconds, (spans, failures, tokens, forwards) = timed(texts, constrained, draft, batch_size)
            out[name] = {"f1": score(examples, spans, official=False).f1, "parse_failures": failures,
                         "seconds": round(seconds, 2),
                         "sentences_per_s": round(len(texts) / seconds, 2),
                         "generated_tokens_per_s": round(tokens / seconds, 1), "generated_tokens": tokens,
                         "forward_passes_per_sentence": round(forwards / max(len(texts), 1), 1),
                         "batch_size": batch_size, "probe_seconds": {str(b): round(s, 3) for b, s in probe.items()}}
            found[name] = spans
    per_token, one_pass = found.get(PER_TOKEN), found.get(ONE_PASS)
    if per_token is not None and one_pass is not None:
        out["same_spans_as_per_token"] = round(sum(a == b for a, b in zip(per_token, one_pass)) / max(len(texts), 1), 4)
    return out
