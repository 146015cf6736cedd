"""The benchmark report's error analysis and learning curves: saved dev predictions in, tables and plots out.

:func:`save_predictions` runs in each benchmark child; :func:`analyse` in the parent, on the
saved predictions of each family's first full run that has them (other seeds and train-size runs
are left out, so every era appears once); :func:`markdown` and :func:`write_plots` render what it returned, as
:mod:`kner.report` renders the rest, from report.json's dict alone.
"""
from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from . import analysis
from .report import _table, fmt_seconds
from .types import Example, Span

PLOT_TAXONOMY = "error_taxonomy.png"
PLOT_CONFUSION = "type_confusion.png"
PLOT_SLICES = "slices_f1.png"
PLOT_LEARNING = "learning_curves.png"
KIND_NAMES = {"correct": "correct", "wrong_type": "wrong type", "wrong_boundary": "wrong boundary",
              "wrong_both": "wrong type and boundary", "missed": "missed", "spurious": "spurious"}
SLICE_NAMES = {"sentence_length": "sentence length (characters)", "entity_length": "entity length (characters)",
               "source": "source (from the sentence id)"}


def predictions_path(parts: Path, name: str) -> Path:
    return Path(parts) / f"{name}.predictions.jsonl"


def save_predictions(path: Path, dev: Sequence[Example], predicted: Sequence[Sequence[Span]]) -> None:
    """One JSON line per dev sentence, ``{"id": ..., "spans": [[start, end, label], ...]}``; written
    beside and renamed, so a killed run never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    with partial.open("w", encoding="utf-8") as f:
        for ex, spans in zip(dev, predicted):
            f.write(json.dumps({"id": ex.id, "spans": [[s.start, s.end, s.label] for s in spans]}, ensure_ascii=False))
            f.write("\n")
    os.replace(partial, path)


def load_predictions(path: Path, dev: Sequence[Example]) -> list[list[Span]]:
    """The spans saved by :func:`save_predictions`; ``ValueError`` unless each line's id is the
    id of the dev sentence at its position."""
    lines = path.read_text(encoding="utf-8").splitlines()
    if len(lines) > len(dev):
        raise ValueError(f"{path.name} holds {len(lines)} sentences, dev only {len(dev)}")
    out = []
    for ex, line in zip(dev, lines):
        row = json.loads(line)
        if row["id"] != ex.id:
            raise ValueError(f"{path.name} has sentence {row['id']!r} where dev has {ex.id!r} (other data?)")
        out.append([Span(*s) for s in row["spans"]])
    return out


def analyse(models: Sequence[dict], dev: Sequence[Example], parts: Path, per_kind: int = 3) -> dict:
    """Taxonomy, confusion, examples and slices per model and agreement across models, for each
    family's first full run whose predictions were saved; the others are listed under ``skipped``."""
    primary: dict[str, dict] = {}
    predictions, skipped = {}, {}
    for m in models:  # in run order: a family's next seed stands in for a run without predictions
        name = m.get("name", m["family"])
        if "error" in m or m.get("train_size") or m["family"] in primary:
            continue
        if predictions_path(parts, name).is_file():
            primary[m["family"]] = m
        else:
            skipped[name] = "no saved dev predictions (a part from before the benchmark saved them)"
    for family, m in primary.items():
        name, path = m.get("name", family), predictions_path(parts, m.get("name", family))
        try:
            predictions[name] = load_predictions(path, dev)
        except ValueError as exc:
            skipped[name] = str(exc)
    per_model = {name: model_errors(dev[: len(preds)], preds, per_kind) for name, preds in predictions.items()}
    result = {"models": per_model, "skipped": skipped}
    if len(predictions) > 1:  # on the dev sentences every model was scored on
        common = min(len(p) for p in predictions.values())
        result["agreement"] = analysis.agreement(dev[:common], {n: p[:common] for n, p in predictions.items()})
    return result


def model_errors(gold: Sequence[Example], predicted: Sequence[Sequence[Span]], per_kind: int = 3) -> dict:
    """One model's error kinds, type confusion, examples and slices on these gold sentences
    (``n_dev`` counts them, whichever split they are)."""
    matches = analysis.match_all(gold, predicted)
    return {"n_dev": len(gold), "taxonomy": analysis.taxonomy(matches), "confusion": analysis.confusion(matches),
            "examples": analysis.error_examples(gold, matches, per_kind), "slices": analysis.slices(gold, predicted)}


# --- markdown -----------------------------------------------------------------------------
def _entity(span: list | None) -> str:
    return "–" if span is None else f"«{span[3]}» {span[2]}"


def _quote(text: str) -> str:
    return "`" + text.replace("`", "'") + "`"


def _around(text: str, *spans: list | None, context: int = 25) -> str:
    """The part of ``text`` around ``spans`` (``context`` characters either side), quoted."""
    start = max(0, min(s[0] for s in spans if s) - context)
    end = max(s[1] for s in spans if s) + context
    return _quote(("…" if start else "") + text[start:end] + ("…" if end < len(text) else ""))


def learning_markdown(curves: dict[str, list[dict]], files: dict[str, str]) -> str:
    rows = [[family, p["name"], f"{p['n_train']:,}", f"{p['f1']:.4f}", fmt_seconds(p["train_seconds"])]
            for family, points in curves.items() for p in points]
    text = ["## Learning curves", "",
            "Each family trained on the first N training sentences (a validation split held out of them as in "
            "every run); the last point is its full run.", "",
            _table(["family", "run", "training sentences", "dev micro F1", "train time"], rows), ""]
    if "learning" in files:
        text += [f"![dev F1 against training sentences and training time]({files['learning']})", ""]
    return "\n".join(text)


def taxonomy_markdown(per_model: dict[str, dict], split: str = "dev") -> str:
    kinds = [KIND_NAMES[k] for k in analysis.KINDS]
    totals = [[name, f"{a['n_dev']:,}", f"{a['taxonomy']['n_gold']:,}", f"{a['taxonomy']['n_pred']:,}",
               *(f"{a['taxonomy']['total'][k]:,}" for k in analysis.KINDS)] for name, a in per_model.items()]
    by_type = [[name, t, *(str(row[k]) for k in analysis.KINDS)]
               for name, a in per_model.items() for t, row in a["taxonomy"]["by_type"].items()]
    return "\n".join([_table(["model", f"{split} sents", "gold", "predicted", *kinds], totals), "",
                      "Per entity type (spurious counted by the predicted type, the rest by the gold type):", "",
                      _table(["model", "type", *kinds], by_type)])


def examples_markdown(per_model: dict[str, dict]) -> str:
    lines = []
    for name, a in per_model.items():
        lines += [f"#### {name}", ""]
        for kind, cases in a["examples"].items():
            lines += [f"- {KIND_NAMES[kind]}: gold {_entity(c['gold'])}, predicted {_entity(c['pred'])} in "
                      f"{_around(c['text'], c['gold'], c['pred'])} ({c['id']})" for c in cases]
        lines.append("")
    return "\n".join(lines)


def confusion_markdown(per_model: dict[str, dict]) -> str:
    parts = []
    for name, a in per_model.items():
        matrix = a["confusion"]
        cols = list(matrix)
        rows = [[f"**{g}**", *("·" if g == p else str(matrix[g][p]) for p in cols)] for g in cols]
        parts += [f"#### {name}", "", _table(["gold ↓ predicted →", *cols], rows), ""]
    return "\n".join(parts)


def errors_markdown(name: str, errors: dict, split: str) -> str:
    """:func:`model_errors` of one model as the report's error kinds, examples and type confusion."""
    one = {name: errors}
    return "\n".join(["### Error kinds", "", taxonomy_markdown(one, split), "", "### Examples of each error", "",
                      examples_markdown(one), "### Type confusion (rows: gold types)", "", confusion_markdown(one)])


def agreement_markdown(agree: dict) -> str:
    names = list(agree["found"])
    n = agree["n_gold"]
    only = [[f"**{a}**", *("·" if a == b else f"{agree['only'][a][b]:,}" for b in names)] for a in names]
    oracle = [[name, f"{k:,}", f"{k / n:.4f}" if n else "–"] for name, k in agree["found"].items()]
    oracle += [["**any model (oracle)**", f"{agree['any_model']:,}", f"{agree['any_model'] / n:.4f}" if n else "–"],
               ["every model", f"{agree['every_model']:,}", f"{agree['every_model'] / n:.4f}" if n else "–"]]
    lines = [f"On the {agree['n_sentences']:,} dev sentences every model was scored on ({n:,} gold entities). "
             "Gold entities the row's model finds exactly and the column's model does not:", "",
             _table(["finds ↓ misses →", *names], only), "",
             "Exact finds (recall); the oracle counts an entity if some model finds it, the headroom of combining eras:",
             "", _table(["model", "gold entities found", "recall"], oracle), "",
             f"{agree['all_wrong']:,} sentences no model tags exactly right; some of them:", ""]
    for case in agree["all_wrong_examples"]:
        lines.append(f"- {_quote(case['text'])} ({case['id']}): gold "
                     + (", ".join(_entity(s) for s in case["gold"]) or "none"))
        lines += [f"  - {name}: " + (", ".join(_entity(s) for s in spans) or "none")
                  for name, spans in case["predicted"].items()]
    return "\n".join(lines)


def _slice_f1(cell: dict | None) -> str:
    return "–" if not cell or not (cell["n_gold"] or cell["n_pred"]) else f"{cell['f1']:.4f}"  # nothing to score


def slices_markdown(per_model: dict[str, dict]) -> str:
    parts = []
    for key, title in SLICE_NAMES.items():
        buckets = list(dict.fromkeys(b for a in per_model.values() for b in a["slices"][key]))
        first = next(iter(per_model.values()))["slices"][key]
        same_dev = len({a["n_dev"] for a in per_model.values()}) == 1  # else the gold counts differ by model
        header = ["model", *(f"{b} ({first[b]['n_gold']:,} gold)" if same_dev and b in first else b for b in buckets)]
        rows = [[name, *(_slice_f1(a["slices"][key].get(b)) for b in buckets)] for name, a in per_model.items()]
        parts += [f"#### By {title}", "", _table(header, rows), ""]
    return "\n".join(parts)


def markdown(result: dict, files: dict[str, str]) -> str:
    """The learning-curve and error-analysis sections of report.md ("" when neither applies)."""
    parts = []
    if result.get("learning_curves"):
        parts.append(learning_markdown(result["learning_curves"], files))
    a = result.get("analysis")
    if a and a.get("error"):
        parts += ["## Error analysis", "", f"The analysis failed: {a['error']}.", ""]
    if not a or not (a["models"] or a["skipped"]):
        return "\n".join(parts)
    parts += ["## Error analysis", "",
              "Each family's first full run on dev with saved predictions (other seeds and train-size runs left out). Gold and predicted entities "
              "are paired one to one (`kner.analysis.match_spans`): same span and type is correct; same span, other "
              "type is a wrong type; overlapping spans are a wrong boundary (same type) or wrong type and boundary; "
              "the rest are missed (gold) or spurious (predicted).", ""]
    parts += [f"- **{name}** left out: {why}." for name, why in a["skipped"].items()] + [""] * bool(a["skipped"])
    per_model = a["models"]
    if per_model:
        parts += ["### Error kinds", "", taxonomy_markdown(per_model), ""]
        parts += [f"![errors per model and entity type]({files['taxonomy']})", ""] if "taxonomy" in files else []
        parts += ["### Examples of each error", "", examples_markdown(per_model)]
        parts += ["### Type confusion", "", "Overlapping gold and predicted entities of different types "
                  "(the wrong-type and wrong-type-and-boundary pairs above); rows are gold types.", "",
                  confusion_markdown(per_model)]
        parts += [f"![type confusion heat maps]({files['confusion']})", ""] if "confusion" in files else []
    if "agreement" in a:
        parts += ["### Agreement between models", "", agreement_markdown(a["agreement"]), ""]
    if per_model:
        parts += ["### F1 by slice", "", "Micro F1 of each model on each slice of dev.", "", slices_markdown(per_model)]
        parts += [f"![F1 by slice]({files['slices']})", ""] if "slices" in files else []
    return "\n".join(parts)


# --- plots --------------------------------------------------------------------------------
def write_plots(result: dict, out: Path) -> dict[str, Path]:
    """The plots that the result's data allows: learning curves, error kinds, confusion, slices."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    per_model = (result.get("analysis") or {}).get("models") or {}
    drawings = [("learning", PLOT_LEARNING, _plot_learning, result.get("learning_curves"))]
    if per_model:
        drawings += [("taxonomy", PLOT_TAXONOMY, _plot_taxonomy, per_model),
                     ("confusion", PLOT_CONFUSION, _plot_confusion, per_model),
                     ("slices", PLOT_SLICES, _plot_slices, per_model)]
    written = {}
    for key, name, draw, data in drawings:
        if data:
            fig = draw(plt, data)
            fig.savefig(Path(out) / name, dpi=120, bbox_inches="tight")
            plt.close(fig)
            written[key] = Path(out) / name
    return written


def _plot_learning(plt, curves: dict[str, list[dict]]):
    from matplotlib.ticker import FuncFormatter, NullFormatter

    fig, (size_ax, time_ax) = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for family, points in curves.items():
        size_ax.plot([p["n_train"] for p in points], [p["f1"] for p in points], marker="o", label=family)
        timed = [p for p in points if p["train_seconds"]]
        time_ax.plot([p["train_seconds"] for p in timed], [p["f1"] for p in timed], marker="o", label=family)
    size_ax.set(xscale="log", xlabel="training sentences (log scale)", ylabel="dev micro F1",
                title="F1 against training data")
    time_ax.set(xscale="log", xlabel="training time, seconds (log scale)", title="F1 against training time")
    ticks: list[int] = []
    for n in sorted(p["train_size"] or p["n_train"] for points in curves.values() for p in points):
        if not ticks or n > ticks[-1] * 1.15:  # one label per size asked for: 944 and 1,000 would overprint
            ticks.append(n)
    size_ax.set_xticks(ticks)
    for ax in (size_ax, time_ax):
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))  # 5,000 rather than 5×10³
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    return fig


def _plot_taxonomy(plt, per_model: dict[str, dict]):
    fig, axes = plt.subplots(1, len(per_model), figsize=(3.6 * len(per_model) + 1.5, 4), sharey=True, squeeze=False)
    for ax, (name, a) in zip(axes[0], per_model.items()):
        types = list(a["taxonomy"]["by_type"])
        bottom = [0] * len(types)
        for kind in analysis.ERRORS:
            heights = [a["taxonomy"]["by_type"][t][kind] for t in types]
            ax.bar(types, heights, bottom=bottom, label=KIND_NAMES[kind], zorder=3)
            bottom = [b + h for b, h in zip(bottom, heights)]
        ax.set_title(name)
        ax.grid(True, axis="y", alpha=0.3)
    axes[0][0].set_ylabel("dev entities")
    axes[0][-1].legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.suptitle("errors per entity type (spurious by predicted type, the rest by gold type)")
    return fig


def _plot_confusion(plt, per_model: dict[str, dict]):
    fig, axes = plt.subplots(1, len(per_model), figsize=(3.8 * len(per_model), 3.8), squeeze=False)
    for ax, (name, a) in zip(axes[0], per_model.items()):
        labels = list(a["confusion"])
        grid = [[a["confusion"][g][p] for p in labels] for g in labels]
        ax.imshow(grid, cmap="Reds")
        top = max(map(max, grid))
        for i, row in enumerate(grid):
            for j, n in enumerate(row):
                if n:  # white on the dark cells, where black would not read
                    ax.text(j, i, str(n), ha="center", va="center", fontsize=8, color="white" if n > top / 2 else "black")
        ax.set_xticks(range(len(labels)), labels)
        ax.set_yticks(range(len(labels)), labels)
        ax.set(title=name, xlabel="predicted type")
    axes[0][0].set_ylabel("gold type")
    fig.suptitle("type confusion on overlapping entities")
    return fig


def _plot_slices(plt, per_model: dict[str, dict]):
    import numpy as np

    fig, axes = plt.subplots(1, len(SLICE_NAMES), figsize=(15, 4), sharey=True)
    width = 0.8 / len(per_model)
    for ax, (key, title) in zip(axes, SLICE_NAMES.items()):
        buckets = list(dict.fromkeys(b for a in per_model.values() for b in a["slices"][key]))
        x = np.arange(len(buckets))
        for i, (name, a) in enumerate(per_model.items()):
            values = [a["slices"][key].get(b, {}).get("f1", 0.0) for b in buckets]
            ax.bar(x + (i - (len(per_model) - 1) / 2) * width, values, width, label=name, zorder=3)
        ax.set_xticks(x, buckets)
        ax.set(title=f"by {title}", ylim=(0, 1))
        ax.grid(True, axis="y", alpha=0.3)
    axes[0].set_ylabel("dev micro F1")
    axes[-1].legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig


__all__ = ["analyse", "load_predictions", "markdown", "predictions_path", "save_predictions", "write_plots"]
