"""``kner push``: publish a run directory to the Hugging Face Hub with a generated model card."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .models import EpochRecord, read_meta
from .types import LABELS

TYPE_NAMES = {"PS": "person", "LC": "location", "OG": "organisation", "DT": "date", "TI": "time", "QT": "quantity"}
SKIP_DIRS = {"checkpoints"}  # resumable training state: large, and not part of the model
EXAMPLE = "이순신 장군은 1592년 한산도에서 왜군을 크게 무찔렀다."
KLUE_CITATION = """@misc{park2021klue,
  title         = {KLUE: Korean Language Understanding Evaluation},
  author        = {Sungjoon Park and Jihyung Moon and Sungdong Kim and Won Ik Cho and Jiyoon Han and Jangwon Park and Chisung Song and Junseong Kim and Yongsook Song and Taehwan Oh and Joohong Lee and Juhyun Oh and Sungwon Lyu and Younghoon Jeong and Inkwon Lee and Sangwoo Seo and Dongjun Lee and Hyunwoo Kim and Myeonghwa Lee and Seongbo Jang and Seungwon Do and Sunkyoung Kim and Kyungtae Lim and Jongwon Lee and Kyumin Park and Jamin Shin and Seonghyun Kim and Lucy Park and Alice Oh and Jungwoo Ha and Kyunghyun Cho},
  year          = {2021},
  eprint        = {2105.09680},
  archivePrefix = {arXiv},
  primaryClass  = {cs.CL}
}"""


class PushError(ValueError):
    """A run directory or repository name that cannot be published as asked."""


@dataclass
class PushPlan:
    """What a push uploads: ``files`` maps a path in the repository to a local file; the card is added as README.md."""

    repo_id: str
    private: bool
    card: str
    files: dict[str, Path] = field(default_factory=dict)
    url: str | None = None


def _base_models(config: dict) -> list[str]:
    """The pretrained checkpoint a fine-tuned family (bert, sllm) started from, or the frozen
    encoders a Bi-LSTM-CRF reads."""
    values = [config.get("base_model") or config.get("encoder"), config.get("encoder2")]
    return [v for v in values if isinstance(v, str) and v]


def _is_hub_id(name: str) -> bool:
    return name.count("/") == 1 and not name.startswith((".", "/", "~")) and not Path(name).exists()


def _has_transformers_files(run_dir: Path) -> bool:
    """True when the folder also loads with plain ``transformers`` (config, weights, tokenizer)."""
    has_weights = any((run_dir / n).is_file() for n in ("model.safetensors", "pytorch_model.bin"))
    return (run_dir / "config.json").is_file() and (run_dir / "tokenizer.json").is_file() and has_weights


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.2f}"


def model_card(run_dir: str | Path, repo_id: str) -> str:
    """The README.md for ``run_dir`` published as ``repo_id``: metadata header, results, data, usage."""
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    run_dir = Path(run_dir)
    meta = read_meta(run_dir)
    family, config, metrics = meta["family"], meta.get("config", {}), meta.get("metrics", {})
    labels = meta.get("labels", list(LABELS))
    bases = _base_models(config)
    base = bases[0] if bases else None
    hf_ready = _has_transformers_files(run_dir)
    eval_results = [
        EvalResult(task_type="token-classification", task_name="Named-entity recognition",
                   dataset_type="klue", dataset_name="KLUE NER", dataset_config="ner", dataset_split="validation",
                   metric_type=metric, metric_name=name, metric_value=round(metrics[key], 4))
        for key, metric, name in (("f1", "f1", "entity micro F1"), ("precision", "precision", "entity micro precision"),
                                  ("recall", "recall", "entity micro recall"),
                                  ("klue_entity_macro_f1", "f1", "KLUE entity macro F1"),
                                  ("klue_char_macro_f1", "f1", "KLUE character macro F1"))
        if isinstance(metrics.get(key), (int, float))
    ]
    data = ModelCardData(
        language="ko", license="cc-by-sa-4.0", library_name="transformers" if hf_ready else "kner",
        pipeline_tag="token-classification", datasets=["klue"], tags=["ner", "korean", "klue", "kner", family],
        base_model=base if base and _is_hub_id(base) else None,
        model_name=repo_id.split("/")[-1], eval_results=eval_results or None,
    )
    sections = [
        f"# {repo_id.split('/')[-1]}",
        f"A Korean named-entity recognition model (**{family}** family) trained with "
        f"kner on KLUE NER. It tags six entity types as character spans: "
        + ", ".join(f"`{t}` {TYPE_NAMES.get(t, t)}" for t in labels) + "."
        + (f" Fine-tuned from `{base}`." if base and "base_model" in config else "")
        + (f" Reads the frozen hidden states of {' and '.join(f'`{b}`' for b in bases)}." if base and "encoder" in config
           else ""),
        _results_section(metrics),
        _speed_section(meta),
        _data_section(metrics, meta.get("provenance") or {}),
        _usage_section(repo_id, hf_ready, (run_dir / "onnx" / "model.onnx").is_file(), _reads_morphemes(run_dir, config)),
        "## Hyperparameters\n\n```json\n" + json.dumps(config, ensure_ascii=False, indent=2) + "\n```",
        _history_section(meta),
        "## License\n\nThe weights are derived from KLUE NER, which is licensed CC BY-SA 4.0, "
        "so they are shared under the same licence." + "".join(_base_licence(b) for b in bases),
        "## Citation\n\n```bibtex\n" + KLUE_CITATION + "\n```",
    ]
    body = "\n\n".join(s for s in sections if s)
    return str(ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}\n"))


def _base_licence(base: str) -> str:
    """The pretrained model inside (or under) the weights keeps its own terms; Gemma's must travel with it."""
    gemma = " ([Gemma Terms of Use](https://ai.google.dev/gemma/terms))" if "gemma" in base.lower() else ""
    return f" They also contain or derive from `{base}`, whose own licence terms apply as well{gemma}."


def _results_section(metrics: dict) -> str:
    if not isinstance(metrics.get("f1"), (int, float)):
        return "## Results\n\nNo dev metrics were recorded with this model (evaluate it with `kner evaluate`)."
    n_dev = f" ({metrics['n_dev']:,} sentences)" if metrics.get("n_dev") else ""
    lines = [
        f"## Results on KLUE NER dev{n_dev}",
        "",
        "Entity-level scores from kner's scorer, in percent. KLUE's own metrics are the entity macro F1 and "
        "the character macro F1.",
        "",
        "| metric | value |", "|---|---:|",
        f"| micro precision | {_pct(metrics.get('precision'))} |",
        f"| micro recall | {_pct(metrics.get('recall'))} |",
        f"| **micro F1** | **{_pct(metrics.get('f1'))}** |",
        f"| KLUE entity macro F1 | {_pct(metrics.get('klue_entity_macro_f1'))} |",
        f"| KLUE character macro F1 | {_pct(metrics.get('klue_char_macro_f1'))} |",
    ]
    per_type = metrics.get("per_type") or {}
    if per_type:
        lines += ["", "| type | precision | recall | F1 | support |", "|---|---:|---:|---:|---:|"]
        lines += [f"| {t} ({TYPE_NAMES.get(t, t)}) | {_pct(v.get('precision'))} | {_pct(v.get('recall'))} | "
                  f"{_pct(v.get('f1'))} | {v.get('support', '–')} |" for t, v in per_type.items()]
    return "\n".join(lines)


def _speed_section(meta: dict) -> str:
    speed = meta.get("metrics", {}).get("speed") or {}
    rows = [(label, speed[key], fmt) for key, label, fmt in (
        ("sentences_per_second", "dev sentences per second", "{:,.1f}"),
        ("chars_per_second", "characters per second", "{:,.0f}"),
        ("latency_p50_ms", "one-sentence latency p50 (ms)", "{:.2f}"),
        ("latency_p95_ms", "one-sentence latency p95 (ms)", "{:.2f}"),
    ) if isinstance(speed.get(key), (int, float))]
    train_seconds = meta.get("train_seconds")
    if isinstance(train_seconds, (int, float)):
        rows.append(("training time (s)", train_seconds, "{:,.0f}"))
    if not rows:
        return ""
    machine = f" Measured on: {speed['machine']}." if isinstance(speed.get("machine"), str) else ""
    return "\n".join(["## Speed", "", f"Figures recorded by kner when the model was trained or benchmarked.{machine}",
                      "", "| measure | value |", "|---|---:|"] + [f"| {k} | {fmt.format(v)} |" for k, v, fmt in rows])


def _data_section(metrics: dict, provenance: dict) -> str:
    n_train = f"{metrics['n_train']:,} sentences of " if metrics.get("n_train") else ""
    selection = provenance.get("selection", {}).get("note", "how the epoch was chosen was not recorded")
    recipe = f" Settings: kner's `{provenance['recipe']}` recipe." if provenance.get("recipe") else ""
    return (
        "## Training data\n\n"
        f"Trained on {n_train}the training split of **KLUE NER** (v1.1) and scored on its dev split; "
        f"{selection}.{recipe} "
        "KLUE NER is part of KLUE: Korean Language Understanding Evaluation (Park et al., 2021), "
        "<https://klue-benchmark.com>, released under the "
        "[Creative Commons Attribution-ShareAlike 4.0](https://creativecommons.org/licenses/by-sa/4.0/) licence. "
        "Its sentences come from news articles (WIKITREE) and movie reviews (NSMC), annotated with character-level BIO tags."
    )


def _reads_morphemes(run_dir: Path, config: dict) -> bool:
    """Does this BERT run cut text at morphemes first (``pretokenize``; auto does where the
    tokenizer is SentencePiece, i.e. has a Metaspace pre-tokenizer)?"""
    mode, tok = config.get("pretokenize", "none"), run_dir / "tokenizer.json"
    return mode == "morphemes" or (mode == "auto" and tok.is_file() and '"Metaspace"' in tok.read_text(encoding="utf-8"))


def _usage_section(repo_id: str, hf_ready: bool, has_onnx: bool, pretokenizes: bool = False) -> str:
    parts = [
        "## Usage",
        "With kner (`pip install kner huggingface_hub`):",
        "```python\nimport kner\nfrom huggingface_hub import snapshot_download\n\n"
        f'tagger = kner.load(snapshot_download("{repo_id}"))\n'
        f'for span in tagger.predict(["{EXAMPLE}"])[0]:\n'
        "    print(span.start, span.end, span.label)\n```",
        "or from the shell: `kner predict $(huggingface-cli download " + repo_id + f') "{EXAMPLE}"`.',
    ]
    if hf_ready:
        parts += [
            "With plain `transformers` (subword tokens, grouped into entities by the pipeline):",
            "```python\nfrom transformers import pipeline\n\n"
            f'ner = pipeline("token-classification", model="{repo_id}", aggregation_strategy="simple")\n'
            f'print(ner("{EXAMPLE}"))\n```',
            "kner's own `predict` additionally handles texts longer than one window and returns exact character spans.",
        ]
        if pretokenizes:
            parts.append("This model reads morphemes (`pretokenize` in kner.json): kner cuts the text at Kiwi morpheme "
                         "starts before subword tokenization. The plain pipeline reads raw text instead and scores lower; "
                         "the figures above are kner's `predict`.")
    if has_onnx:
        parts.append("`onnx/model.onnx` is the same network exported for onnxruntime (`kner export-onnx`); "
                     "`kner serve --backend onnx` and `kner.onnx_backend.load_onnx` use it and give the same spans as torch.")
    return "\n\n".join(parts)


def _history_section(meta: dict) -> str:
    history = meta.get("history") or []
    if not history:
        return ""
    records = [EpochRecord.from_dict(r) for r in history]
    rows = [f"| {r.epoch} | {r.seconds:.0f} | {r.train_loss:.4f} | {_pct(r.valid_f1)} |" for r in records]
    return "\n".join(["## Training log", "", "| epoch | seconds | train loss | validation F1 |", "|---:|---:|---:|---:|"]
                     + rows)


def plan(run_dir: str | Path, repo_id: str, private: bool = False) -> PushPlan:
    """Everything a push would do, without touching the network: card text and the files to upload."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as exc:
        raise PushError(f"--repo {repo_id!r} is not a valid repository name: {exc}") from exc
    if "/" not in repo_id:
        raise PushError(f"--repo {repo_id!r} needs an owner: write it as USER/NAME (or ORG/NAME)")
    run_dir = Path(run_dir)
    card = model_card(run_dir, repo_id)  # also checks that run_dir is a kner model directory
    files = {}
    for path in sorted(run_dir.rglob("*")):
        rel = path.relative_to(run_dir)
        if path.is_file() and not (SKIP_DIRS & set(rel.parts[:-1])) and not any(p.startswith(".") for p in rel.parts):
            files[rel.as_posix()] = path
    files.pop("README.md", None)  # replaced by the generated card
    return PushPlan(repo_id=repo_id, private=private, card=card, files=files)


def push(run_dir: str | Path, repo_id: str, private: bool = False, token: str | None = None,
         dry_run: bool = False, api: Any = None) -> PushPlan:
    """Create ``repo_id`` (if needed) and upload the model files plus its card in one commit.

    ``api`` is an ``HfApi``-like object (tests pass a fake one); with ``dry_run`` nothing is sent.
    The run directory itself is not modified: the card is uploaded from memory.
    """
    result = plan(run_dir, repo_id, private)
    if dry_run:
        return result
    from huggingface_hub import CommitOperationAdd, HfApi

    from huggingface_hub.errors import HfHubHTTPError

    api = api if api is not None else HfApi(token=token)
    operations = [CommitOperationAdd(path_in_repo=rel, path_or_fileobj=str(path)) for rel, path in result.files.items()]
    operations.append(CommitOperationAdd(path_in_repo="README.md", path_or_fileobj=result.card.encode("utf-8")))
    try:
        repo_url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model", token=token)
        api.create_commit(repo_id, operations=operations, repo_type="model", token=token,
                          commit_message=f"Upload kner {read_meta(run_dir)['family']} model")
    except HfHubHTTPError as exc:
        raise PushError(f"the Hub refused the upload to {repo_id} ({exc}); check the token (--token or "
                        "'hf auth login') and that it may write to that namespace") from exc
    result.url = str(repo_url)
    return result
