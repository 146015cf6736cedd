"""The GPU check behind ``scripts/gpu_check.sh``: the GPU-marked tests, then one timed training run of
every torch family on full KLUE, written up as ``summary.json`` and ``summary.md``.

Only the checkout reaches the GPU machine (no hub, no package registry, at most 64 MiB), so
``prepare`` runs beforehand where those are at hand: it copies KLUE, trains the tokenizers on its
text and unpacks pytest's wheels into an ignored folder that travels with the checkout. The weights
are drawn at random on the GPU machine, in the real architectures' shapes (speed does not depend
on their values). Decoding speed does depend on them, so ``prepare --sllm`` also carries a small
sLLM trained here, whose two constrained decodings are timed on all of dev. A smoke plan shrinks
every model and data slice so the same path runs on a CPU.
"""
from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
import xml.etree.ElementTree as ET
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from .data import find_split_file, load_split
from .models.base import read_meta

REPO = Path(__file__).resolve().parents[2]
RTX3090_BERT_EPOCH_S = 54.6  # klue/bert-base, KLUE NER train, batch 32, fp16, on an RTX 3090 (the tutorial kner follows)
PYTEST_WHEELS = ("pytest", "pluggy", "iniconfig", "pygments")  # pure Python; the GPU machine lacks pytest
# The GPU machine has neither kiwipiepy nor scikit-learn (Kiwi features, PPMI-SVD initialisation).
BILSTM_WITHOUT_KIWI = dict(kiwi_dim=0, kiwi_vectors=0, gazetteer_dim=0, pretrained_init=False)
TRAINED_SLLM = "sllm-trained"  # where prepare puts the trained sLLM, in bf16
CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


@dataclass
class Plan:
    """What one run trains and times; :data:`FULL` on the GPU, :data:`SMOKE` on a CPU."""

    tokenizer_vocab: int
    tokenizer_texts: int | None  # training sentences the tokenizers learn from (None: all)
    train_limit: int | None  # training sentences for BERT and the Bi-LSTM-CRF (None: all)
    bert: dict
    qwen: dict
    gemma: dict
    bilstm: dict = field(default_factory=dict)
    sllm_steps: int = 200
    sllm_batch: int = 8
    decode_sentences: int = 64
    decode_batch: int = 64  # one batch: random weights write long markup, so decoding is slow and not worth probing
    trained_sentences: int | None = None  # dev sentences the trained sLLM decodes (None: all)
    trained_batch_sizes: tuple[int, ...] = (16, 64, 256)  # each decoding uses the one fastest on the probe
    trained_probe: int = 512  # sentences spread over dev that choose the batch size


FULL = Plan(
    tokenizer_vocab=32_000, tokenizer_texts=None, train_limit=None,
    bert=dict(vocab_size=32_000, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,  # klue/bert-base
              intermediate_size=3072, max_position_embeddings=512),
    qwen=dict(vocab_size=151_936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,  # Qwen2.5-0.5B
              num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=32_768),
    gemma=dict(vocab_size=262_144, hidden_size=640, intermediate_size=2048, num_hidden_layers=18,  # gemma-3-270m
               num_attention_heads=4, num_key_value_heads=1, head_dim=256, query_pre_attn_scalar=256,
               sliding_window=512, max_position_embeddings=32_768),
)
SMALL_GEMMA = dict(hidden_size=256, intermediate_size=768, num_hidden_layers=4, num_attention_heads=4,
                   num_key_value_heads=1, head_dim=64, query_pre_attn_scalar=64, sliding_window=512,
                   max_position_embeddings=2048)
"""The small sLLM trained here for the decoding comparison: gemma-3's architecture at 11M parameters
(22 MB in bf16, so it travels), fully fine-tuned from random weights on KLUE (docs/gpu.md)."""
SMOKE = Plan(
    tokenizer_vocab=1000, tokenizer_texts=500, train_limit=16,
    bert=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
              max_position_embeddings=128),
    qwen=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
              num_key_value_heads=1, max_position_embeddings=1024),
    gemma=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
               num_key_value_heads=1, head_dim=16, query_pre_attn_scalar=16, sliding_window=16,
               max_position_embeddings=1024),
    bilstm=dict(char_dim=16, bigram_dim=8, eojeol_dim=4, hidden=16),
    sllm_steps=2, sllm_batch=4, decode_sentences=2, decode_batch=2,
    trained_sentences=6, trained_batch_sizes=(2, 4), trained_probe=4,
)


# --- prepare: what must travel, made where the network and KLUE are ---------------------------------

def prepare(klue: Path, into: Path, smoke: bool, sllm: Path | None = None) -> None:
    """KLUE, the tokenizers, pytest (not for the smoke run, where it is installed) and, from ``sllm``
    (for the smoke run: a tiny one trained on a few sentences), the trained sLLM into ``into``."""
    plan = SMOKE if smoke else FULL
    (into / "klue").mkdir(parents=True, exist_ok=True)
    for split in ("train", "dev"):
        shutil.copy2(find_split_file(klue, split), into / "klue" / f"klue-ner-{split}.tsv")
    texts = [ex.text for ex in load_split("train", into / "klue", plan.tokenizer_texts)]
    wordpiece(texts, plan.tokenizer_vocab).save_pretrained(into / "tokenizers/wordpiece")
    byte_level_bpe(texts, plan.tokenizer_vocab).save_pretrained(into / "tokenizers/bpe")
    if not smoke:  # the smoke runs where pytest is installed
        unpack_wheels(into / "site")
    shutil.rmtree(into / TRAINED_SLLM, ignore_errors=True)
    if smoke:
        with tempfile.TemporaryDirectory() as tmp:
            carry_sllm(tiny_trained_sllm(into, Path(tmp), plan.train_limit), into / TRAINED_SLLM)
    elif sllm is not None:
        carry_sllm(sllm, into / TRAINED_SLLM)
    (into / "prepared.json").write_text(json.dumps({"smoke": smoke}), encoding="utf-8")


def wordpiece(texts: list[str], vocab_size: int):
    """A cased BERT WordPiece tokenizer (as klue/bert-base's) trained on ``texts``."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    # Lowercasing would strip accents too, which decomposes Hangul.
    tok.normalizer = normalizers.BertNormalizer(lowercase=False, strip_accents=False)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=specials))
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[(t, tok.token_to_id(t)) for t in ("[CLS]", "[SEP]")])
    tok.decoder = decoders.WordPiece()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]", model_max_length=512)


def byte_level_bpe(texts: list[str], vocab_size: int):
    """A byte-level BPE (as Qwen's) trained on ``texts``: every byte has a token, so any text can be written."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    # Markup in the training text gives the markup pieces (":PS>") tokens of their own.
    markup = [f"<이순신:{t}> 장군 <서울:{t}>" for t in ("PS", "LC", "OG", "DT", "TI", "QT")] * 20
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts + markup, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   model_max_length=32_768)


def carry_sllm(model: Path, into: Path) -> None:
    """A copy of the full-weight sLLM ``model`` with its weights stored in bf16, half the bytes (they
    are read back in the model's saved precision). A LoRA adapter cannot go: its base is too big to travel."""
    import torch
    from safetensors.torch import load_file, save_file

    meta = read_meta(model)
    if meta["family"] != "sllm" or meta["config"].get("lora", True):
        raise SystemExit(f"gpu_check: {model} is not a full-weight sLLM; train one with 'kner train sllm --no-lora'")
    shutil.copytree(model, into, ignore=shutil.ignore_patterns("model.safetensors"))
    weights = load_file(model / "model.safetensors")
    save_file({name: w.to(torch.bfloat16) for name, w in weights.items()}, into / "model.safetensors",
              metadata={"format": "pt"})


def tiny_trained_sllm(prepared: Path, tmp: Path, sentences: int) -> Path:
    """The smoke run's stand-in for a trained sLLM: a tiny random gemma-3 fine-tuned on a few sentences."""
    from .models.sllm import SLLMTagger

    random_causal_lm(prepared, SMOKE.gemma, "cpu", tmp / "base", "gemma")
    train = load_split("train", prepared / "klue", sentences)
    SLLMTagger(base_model=str(tmp / "base"), lora=False, epochs=1, batch_size=4, eval_limit=0,
               device="cpu").fit(train).save(tmp / "model")
    return tmp / "model"


def random_causal_lm(prepared: Path, shape: dict, device: str, into: Path, arch: str) -> int:
    """A randomly initialised ``arch`` LLM of ``shape`` with the KLUE-trained BPE, saved in ``into``;
    returns its parameter count."""
    import torch
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    tokenizer = PreTrainedTokenizerFast.from_pretrained(prepared / "tokenizers/bpe")
    tokenizer.chat_template = CHAT_TEMPLATE if arch == "qwen" else None  # gemma-3-270m is a base model, no template
    tokenizer.save_pretrained(into)
    config_cls, model_cls = {"qwen": (Qwen2Config, Qwen2ForCausalLM), "gemma": (Gemma3TextConfig, Gemma3ForCausalLM)}[arch]
    config = config_cls(**{"vocab_size": len(tokenizer), **shape}, tie_word_embeddings=True,
                        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, bos_token_id=None)
    torch.manual_seed(0)
    with torch.device(device):  # drawing half a billion weights is quicker on the GPU
        model = model_cls(config)
    # Stored in bf16 on the GPU, as the real checkpoints are; the LoRA base is read in half precision anyway.
    model.to(torch.bfloat16 if device == "cuda" else torch.float32).save_pretrained(into)
    return sum(p.numel() for p in model.parameters())


def unpack_wheels(site: Path) -> None:
    """pytest and its pure-Python dependencies, at this machine's versions, unpacked (a pure-Python
    wheel unpacked is an installed package) into ``site``."""
    with tempfile.TemporaryDirectory() as tmp:
        pins = [f"{name}=={importlib.metadata.version(name)}" for name in PYTEST_WHEELS]
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                        "--dest", tmp, *pins], check=True)
        for wheel in Path(tmp).glob("*.whl"):
            zipfile.ZipFile(wheel).extractall(site)


# --- run: the tests, then the timings ------------------------------------------------------------------

def run(prepared: Path, out: Path, only: list[str] | None = None) -> int:
    import torch

    smoke = json.loads((prepared / "prepared.json").read_text(encoding="utf-8"))["smoke"]
    if not smoke and not torch.cuda.is_available():
        raise SystemExit("gpu_check: torch sees no GPU; on a CPU run scripts/gpu_check.sh --cpu-smoke")
    plan, device = SMOKE if smoke else FULL, "cuda" if torch.cuda.is_available() else "cpu"
    out.mkdir(parents=True, exist_ok=True)
    summary = {"smoke": smoke, **environment(device), "stages": {}}
    stages = {
        "gpu_tests": lambda tmp: gpu_tests(prepared, out),
        **({"sllm_trained": lambda tmp: sllm_trained(prepared, plan, device)}
           if (prepared / TRAINED_SLLM).is_dir() else {}),  # prepared with --sllm
        "bert": lambda tmp: bert_epoch(prepared, plan, device, tmp),
        "sllm_gemma-3-270m": lambda tmp: sllm_steps(prepared, plan, device, tmp, "gemma"),
        "bilstm_crf": lambda tmp: bilstm_epoch(prepared, plan, device),
        "sllm_qwen2.5-0.5b": lambda tmp: sllm_steps(prepared, plan, device, tmp, "qwen"),
    }
    unknown = set(only or ()) - set(stages)
    if unknown:
        raise SystemExit(f"gpu_check: no stage {', '.join(sorted(unknown))}; the stages are {', '.join(stages)}")
    started = time.perf_counter()
    for name, stage in stages.items():
        if only and name not in only:
            continue
        print(f"gpu_check: {name}", flush=True)
        summary["stages"][name] = timed(stage, device)
        summary["total_seconds"] = _sig(time.perf_counter() - started)
        write_summary(summary, out)  # after every stage, so a run cut short still reports
    print((out / "summary.md").read_text(encoding="utf-8"))
    return 0 if all(s["ok"] for s in summary["stages"].values()) else 1


def environment(device: str) -> dict:
    import torch

    from .machine import cpu_model

    versions = {name: importlib.metadata.version(name) for name in ("transformers", "peft", "accelerate", "tokenizers")}
    gpu = torch.cuda.get_device_properties(0) if device == "cuda" else None
    return {"device": gpu.name if gpu else f"cpu: {cpu_model()}",
            "gpu_memory_gb": round(gpu.total_memory / 2**30, 1) if gpu else None,
            "python": sys.version.split()[0], "torch": torch.__version__, "cuda": torch.version.cuda, **versions}


def _sig(seconds: float) -> float:
    """Three significant figures: a fast machine's smoke epoch must not round to zero seconds."""
    return float(f"{seconds:.3g}")


def timed(stage, device: str) -> dict:
    """A stage's own figures (``ok`` unless it says otherwise) plus ``seconds`` and this process's peak
    GPU memory; an exception is recorded (type, message, traceback tail) and the next stage still runs."""
    import torch

    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="kner-gpu-check-") as tmp:
        try:
            result = {"ok": True, **stage(Path(tmp))}
        except Exception as exc:  # one broken family must not hide the others' figures
            traceback.print_exc()
            result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:2000],
                      "traceback": traceback.format_exc()[-4000:]}
    peak = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None
    return {**result, "seconds": _sig(time.perf_counter() - start),
            "peak_gpu_memory_gb": None if peak is None else round(peak, 2)}


def gpu_tests(prepared: Path, out: Path) -> dict:
    """``pytest -m gpu`` in a child process, with pytest from the prepared wheels where it is missing."""
    paths = [str(REPO / "src")] + ([] if importlib.util.find_spec("pytest") else [str(prepared / "site")])
    env = {**os.environ, "KNER_DATA": str(prepared / "klue"),
           "PYTHONPATH": os.pathsep.join(paths + [p for p in [os.environ.get("PYTHONPATH")] if p])}
    report = out / "gpu_tests.xml"
    proc = subprocess.run([sys.executable, "-m", "pytest", "tests/test_gpu.py", "-m", "gpu", "-q", "-p", "no:cacheprovider",
                           f"--junitxml={report}"], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    (out / "gpu_tests.log").write_text(proc.stdout + proc.stderr, encoding="utf-8")
    if not report.is_file():
        raise RuntimeError(f"pytest exited {proc.returncode} without a report: {(proc.stdout + proc.stderr)[-1500:]}")
    suite = ET.parse(report).getroot().find("testsuite")
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    failed = [f"{case.get('classname')}::{case.get('name')}" for case in suite.iter("testcase")
              if case.find("failure") is not None or case.find("error") is not None]
    ok = proc.returncode in (0, 5) and not failed  # 5: nothing collected or selected
    return {"ok": ok, **counts, "passed": counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"],
            "failed_tests": failed, **({} if ok else {"error": f"pytest exited {proc.returncode}; see gpu_tests.log"})}


def bert_epoch(prepared: Path, plan: Plan, device: str, tmp: Path) -> dict:
    """One epoch of ``kner train bert``'s training on KLUE train with the KLUE paper's recipe."""
    import torch
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    from .models.bert import BertTagger

    tokenizer = PreTrainedTokenizerFast.from_pretrained(prepared / "tokenizers/wordpiece")
    tokenizer.save_pretrained(tmp / "base")
    torch.manual_seed(0)
    BertModel(BertConfig(**{"vocab_size": len(tokenizer), **plan.bert})).save_pretrained(tmp / "base")
    train = load_split("train", prepared / "klue", plan.train_limit)
    tagger = BertTagger(base_model=str(tmp / "base"), epochs=1, batch_size=32, max_length=128, lr=5e-5,
                        warmup_ratio=0.1, precision="auto", device=device)
    start = time.perf_counter()
    tagger.fit(train)
    fit_seconds = time.perf_counter() - start
    windows = sum(len(enc.wins) for enc in tagger.encoder.encode([ex.text for ex in train]))
    epoch = tagger.history[0].seconds
    return {"train_sentences": len(train), "windows": windows, "steps": math.ceil(windows / 32),
            "precision": tagger.train_precision, "tokenizer_vocab": len(tokenizer), "epoch_seconds": _sig(epoch),
            "fit_seconds": _sig(fit_seconds), "windows_per_s": round(windows / epoch, 1),
            "rtx3090_epoch_seconds": RTX3090_BERT_EPOCH_S, "speedup_vs_rtx3090": round(RTX3090_BERT_EPOCH_S / epoch, 2)}


def sllm_steps(prepared: Path, plan: Plan, device: str, tmp: Path, arch: str) -> dict:
    """``plan.sllm_steps`` LoRA steps of ``kner train sllm``'s training, then constrained decoding
    of ``plan.decode_sentences`` dev sentences, per token and with one-pass verification."""
    from .models.sllm import SLLMTagger

    parameters = random_causal_lm(prepared, getattr(plan, arch), device, tmp / "base", arch)
    train = load_split("train", prepared / "klue", plan.sllm_steps * plan.sllm_batch)
    dev = load_split("dev", prepared / "klue", plan.decode_sentences)
    tagger = SLLMTagger(base_model=str(tmp / "base"), lora=True, epochs=1, batch_size=plan.sllm_batch, eval_limit=0,
                        predict_batch_size=32, device=device)
    tagger.fit(train)
    train_s = tagger.history[0].seconds
    # The KLUE-trained tokenizer writes Korean in fewer tokens than Qwen's or Gemma's: tokens/s compare best.
    tokens = [len(item["input_ids"]) for item in tagger._features(train)]
    steps = math.ceil(len(tokens) / plan.sllm_batch)
    # Issue 20's one-pass verification against per-token decoding. Random weights open and close marks far
    # more often than a trained model (tokens and passes per sentence show how much), so the ratio is not a trained
    # model's: the sllm_trained stage times one.
    return {"parameters_m": round(parameters / 1e6, 1), "tokenizer_vocab": len(tagger.tokenizer), "precision": tagger.precision,
            "lora_steps": steps, "batch_size": plan.sllm_batch, "train_seconds": _sig(train_s),
            "steps_per_s": round(steps / train_s, 2),
            "train_tokens_per_s": round(sum(tokens) / train_s, 1), "mean_sequence_tokens": round(sum(tokens) / len(tokens), 1),
            **decoding_figures(tagger, dev, (plan.decode_batch,), plan.decode_batch)}


def decoding_figures(tagger, dev: list, batch_sizes: tuple[int, ...], probe: int) -> dict:
    """Per-token decoding against one-pass verification of ``dev`` (:func:`compare_decoding`), each
    at the one of ``batch_sizes`` that decodes ``probe`` sentences spread over it fastest."""
    from .models.sllm import ONE_PASS, PER_TOKEN, compare_decoding

    result = compare_decoding(tagger, dev, batch_sizes=batch_sizes, decodings=[PER_TOKEN, ONE_PASS],
                              probe_sentences=probe)
    per_token, one_pass = result[PER_TOKEN], result[ONE_PASS]
    return {"decode_sentences": len(dev), "f1": round(per_token["f1"], 4), "one_pass_f1": round(one_pass["f1"], 4),
            "per_token_batch": per_token["batch_size"], "per_token_sentences_per_s": per_token["sentences_per_s"],
            "per_token_passes_per_sentence": per_token["forward_passes_per_sentence"],
            "decode_batch": one_pass["batch_size"], "decode_seconds": one_pass["seconds"],
            "decode_sentences_per_s": one_pass["sentences_per_s"],
            "passes_per_sentence": one_pass["forward_passes_per_sentence"],
            "generated_tokens_per_sentence": round(one_pass["generated_tokens"] / len(dev), 1),
            "generated_tokens_per_s": one_pass["generated_tokens_per_s"],
            "verification_speedup": round(one_pass["sentences_per_s"] / per_token["sentences_per_s"], 2),
            "same_spans_as_per_token": result["same_spans_as_per_token"],
            "probe_seconds": {"per_token": per_token["probe_seconds"], "one_pass": one_pass["probe_seconds"]},
            "parse_failures": one_pass["parse_failures"] + per_token["parse_failures"]}


def sllm_trained(prepared: Path, plan: Plan, device: str) -> dict:
    """Issue 20's comparison on the trained sLLM that ``prepare`` carried: per-token decoding against
    one-pass verification of dev, each at the batch size that decodes a probe of it fastest."""
    from .models import load

    tagger = load(prepared / TRAINED_SLLM, device=device)
    dev = load_split("dev", prepared / "klue", plan.trained_sentences)
    return {"parameters_m": round(sum(p.numel() for p in tagger.model.parameters()) / 1e6, 1),
            "precision": tagger.precision, "draft_tokens": tagger.config.draft_tokens,
            **decoding_figures(tagger, dev, plan.trained_batch_sizes, plan.trained_probe)}


def bilstm_epoch(prepared: Path, plan: Plan, device: str) -> dict:
    """One epoch of ``kner train bilstm-crf``'s training on KLUE train, without Kiwi's features."""
    from .models.bilstm_crf import BiLSTMCRFTagger

    train = load_split("train", prepared / "klue", plan.train_limit)
    tagger = BiLSTMCRFTagger(**plan.bilstm, **BILSTM_WITHOUT_KIWI, max_epochs=1, device=device)
    tagger.fit(train)
    epoch = tagger.history[0].seconds
    return {"train_sentences": len(train), "kiwi_features": False, "epoch_seconds": _sig(epoch),
            "sentences_per_s": round(len(train) / epoch, 1)}


# --- the summary ------------------------------------------------------------------------------------

FIGURES = {  # stage name prefix -> (label, key) shown in the Markdown table
    "gpu_tests": [("passed", "passed"), ("failed", "failures"), ("skipped", "skipped")],
    "bert": [("epoch s", "epoch_seconds"), ("RTX 3090 s", "rtx3090_epoch_seconds"), ("× 3090", "speedup_vs_rtx3090"),
             ("windows/s", "windows_per_s"), ("precision", "precision")],
    "sllm_trained": [("F1", "f1"), ("per-token sent/s", "per_token_sentences_per_s"), ("at batch", "per_token_batch"),
                     ("one-pass sent/s", "decode_sentences_per_s"), ("at batch", "decode_batch"),
                     ("× per-token", "verification_speedup"), ("per-token passes/sent", "per_token_passes_per_sentence"),
                     ("passes/sent", "passes_per_sentence"), ("same spans", "same_spans_as_per_token"),
                     ("precision", "precision")],
    "sllm": [("LoRA steps", "lora_steps"), ("steps/s", "steps_per_s"), ("train tokens/s", "train_tokens_per_s"),
             ("decode sent/s", "decode_sentences_per_s"), ("gen tokens/sent", "generated_tokens_per_sentence"),
             ("gen tokens/s", "generated_tokens_per_s"),
             ("per-token sent/s", "per_token_sentences_per_s"), ("× per-token", "verification_speedup"),
             ("passes/sent", "passes_per_sentence"), ("per-token passes/sent", "per_token_passes_per_sentence"),
             ("same spans", "same_spans_as_per_token"), ("parse failures", "parse_failures")],
    "bilstm_crf": [("epoch s", "epoch_seconds"), ("sent/s", "sentences_per_s")],
}


def write_summary(summary: dict, out: Path) -> None:
    (out / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    memory = "" if summary["gpu_memory_gb"] is None else f" ({summary['gpu_memory_gb']} GB)"
    lines = [f"# kner GPU check{' (CPU smoke: tiny models, a few sentences)' if summary['smoke'] else ''}", "",
             f"{summary['device']}{memory}; torch {summary['torch']}, CUDA {summary['cuda']}, transformers "
             f"{summary['transformers']}, peft {summary['peft']}, Python {summary['python']}; "
             f"{summary['total_seconds']} s in all.", "",
             "| stage | ok | seconds | peak GPU GB | figures |", "|---|---|---:|---:|---|"]
    for name, s in summary["stages"].items():
        shown = next(figures for prefix, figures in FIGURES.items() if name.startswith(prefix))
        figures = "; ".join(f"{label} {s[key]}" for label, key in shown if key in s) or s["error"]
        figures = " ".join(figures.replace("|", "/").split())  # one table cell
        peak = "–" if s["peak_gpu_memory_gb"] is None else s["peak_gpu_memory_gb"]
        lines.append(f"| {name} | {'yes' if s['ok'] else 'NO'} | {s['seconds']} | {peak} | {figures} |")
    (out / "summary.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kner.gpu_check", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    prep = sub.add_parser("prepare", help="copy KLUE, train the tokenizers, unpack pytest (run before the GPU machine)")
    prep.add_argument("--data", required=True, help="the KLUE NER v1.1 release folder")
    prep.add_argument("--into", required=True, help="the ignored folder that travels with the checkout")
    prep.add_argument("--smoke", action="store_true",
                      help="tiny tokenizers, a tiny trained sLLM and no wheels, for the CPU smoke run")
    prep.add_argument("--sllm", type=Path, help="a full-weight sLLM trained here (kner train sllm --no-lora, under "
                                                "about 20M parameters) whose decoding the check times")
    base = sub.add_parser("small-sllm-base", help="the random small gemma-3 that 'kner train sllm --no-lora' "
                                                  "trains into the sLLM that prepare --sllm carries")
    base.add_argument("--prepared", required=True, help="the folder 'prepare' wrote (its BPE tokenizer is used)")
    base.add_argument("--into", required=True, help="folder to write the base model to")
    go = sub.add_parser("run", help="run the GPU tests and time every torch family")
    go.add_argument("--prepared", required=True, help="the folder 'prepare' wrote")
    go.add_argument("--out", required=True, help="folder for summary.json, summary.md and the test log")
    go.add_argument("--stages", nargs="+", metavar="STAGE", help="run only these stages (to finish a run cut short)")
    args = parser.parse_args(argv)
    if args.command == "prepare":
        prepare(Path(args.data), Path(args.into), args.smoke, args.sllm)
        return 0
    if args.command == "small-sllm-base":
        random_causal_lm(Path(args.prepared), SMALL_GEMMA, "cpu", Path(args.into), "gemma")
        return 0
    return run(Path(args.prepared).resolve(), Path(args.out).resolve(), args.stages)  # the tests' child process runs in the repo


if __name__ == "__main__":
    sys.exit(main())
