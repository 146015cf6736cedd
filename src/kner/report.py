"""The benchmark report: ``report.json`` (everything), ``report.md`` (tables) and PNG plots.

Everything here renders the dict that :func:`kner.benchmark.run_benchmark` builds; nothing is
measured here. F1 figures are fractions in 0–1, as ``kner evaluate`` prints them.
"""
from __future__ import annotations

import json
import statistics
from pathlib import Path

from .machine import machine_line, machine_markdown
from .types import LABELS

PLOT_THROUGHPUT = "f1_vs_throughput.png"
PLOT_PER_TYPE = "per_type_f1.png"
PLOT_EPOCHS = "epoch_f1.png"

HEADLINE = ("model", "train sents", "dev sents", "micro F1", "KLUE entity macro F1", "KLUE char macro F1",
            "train time", "sent/s", "char/s", "p50/p95 ms", "size MB", "peak RSS MB (run / predicting)")


def write_report(result: dict, out: str | Path) -> dict[str, Path]:
    """Write report.json, the plots and report.md (which embeds the plots) into ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "report.json", "md": out / "report.md"}
    paths["json"].write_text(json.dumps(result, ensure_ascii=False, indent=2), encoding="utf-8")
    paths.update(write_plots(result, out))
    paths.update(_analysis_report().write_plots(result, out))
    paths["md"].write_text(render_markdown(result, {k: p.name for k, p in paths.items()}), encoding="utf-8")
    return paths


def _analysis_report():
    from . import analysis_report  # imported late: it builds on this module's helpers

    return analysis_report


# --- formatting ---------------------------------------------------------------------------
def fmt_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, sec = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} m {sec:02d} s"
    return f"{minutes // 60} h {minutes % 60:02d} m"


def fmt_rate(rate: float) -> str:
    return f"{rate:,.0f}" if rate >= 100 else f"{rate:.3g}"


def fmt_count(used: int | None, available: int | None) -> str:
    """``"3,000 of 21,003"`` for a subset, ``"21,003 (all)"`` for the whole split."""
    if used is None:
        return "unknown"
    if available is not None and used >= available:
        return f"{used:,} (all)"
    return f"{used:,} of {available:,}" if available is not None else f"{used:,}"


def _table(header: list[str] | tuple[str, ...], rows: list[list[str]], align: str = "---:") -> str:
    lines = ["| " + " | ".join(header) + " |", "|---|" + f"{align}|" * (len(header) - 1)]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in rows]
    return "\n".join(lines)


def _model_name(m: dict) -> str:
    return m.get("name", m["family"]) + (" (reused)" if m.get("reused") else "")


# --- seeds and selection ------------------------------------------------------------------
SEED_METRICS = ("f1", "klue_entity_macro_f1", "klue_char_macro_f1")


def aggregate_seeds(models: list[dict]) -> dict[str, dict]:
    """Per family: its runs' names and, for each of ``SEED_METRICS``, mean, sample sd (None for
    one run), best and the run that scored best. Learning-curve runs (on fewer sentences) are no seeds."""
    out: dict[str, dict] = {}
    full = [m for m in models if "error" not in m and not m.get("train_size")]
    for family in dict.fromkeys(m["family"] for m in full):
        runs = [m for m in full if m["family"] == family]
        entry: dict = {"runs": [m.get("name", family) for m in runs], "seeds": [m.get("seed") for m in runs]}
        for key in SEED_METRICS:
            values = [m[key] for m in runs]
            best = max(range(len(runs)), key=lambda i: values[i])
            entry[key] = {"mean": statistics.mean(values), "sd": statistics.stdev(values) if len(values) > 1 else None,
                          "best": values[best], "best_run": entry["runs"][best], "values": values}
        out[family] = entry
    return out


def selection_effect(history: list[dict]) -> dict | None:
    """From a history with monitored dev F1: the epoch validation chose and its dev F1, against
    the epoch dev would have chosen and the dev F1 that choice would have reported."""
    scored = [h for h in history if h.get("valid_f1") is not None and h.get("dev_f1") is not None]
    if not scored:
        return None
    chosen = max(scored, key=lambda h: h["valid_f1"])  # max() keeps the first of equals, as the selector does
    by_dev = max(scored, key=lambda h: h["dev_f1"])
    return {"valid_epoch": chosen["epoch"], "valid_choice_dev_f1": chosen["dev_f1"], "dev_epoch": by_dev["epoch"],
            "dev_choice_dev_f1": by_dev["dev_f1"], "overstatement": by_dev["dev_f1"] - chosen["dev_f1"]}


def fmt_mean_sd(entry: dict, n: int) -> str:
    if entry["sd"] is None:
        return f"{entry['mean']:.4f}"
    return f"{entry['mean']:.4f} ± {entry['sd']:.4f} (n={n})"


def seeds_markdown(families: dict[str, dict]) -> str:
    header = ["family", "runs", "micro F1 mean ± sd", "best micro F1 (run)", "KLUE entity macro F1 mean",
              "KLUE char macro F1 mean"]
    rows = [[family, str(len(e["runs"])), fmt_mean_sd(e["f1"], len(e["runs"])),
             f"{e['f1']['best']:.4f} ({e['f1']['best_run']})", f"{e['klue_entity_macro_f1']['mean']:.4f}",
             f"{e['klue_char_macro_f1']['mean']:.4f}"] for family, e in families.items()]
    return _table(header, rows)


def selection_markdown(models: list[dict]) -> str:
    """How each run chose its epoch, and (with monitored dev) what choosing on dev would have reported."""
    lines, rows = [], []
    for m in models:
        lines.append(f"- **{_model_name(m)}**: {m.get('selection', {}).get('note', 'selection not recorded')}.")
        effect = selection_effect(m.get("history", []))
        if effect:
            rows.append([_model_name(m), str(effect["valid_epoch"]), f"{effect['valid_choice_dev_f1']:.4f}",
                         str(effect["dev_epoch"]), f"{effect['dev_choice_dev_f1']:.4f}",
                         f"{effect['overstatement'] * 100:+.2f}"])
    text = "\n".join(lines)
    if rows:
        text += ("\n\nDev was also scored after every epoch, for the record only (`--monitor-dev`; plain decoding, "
                 "before any tuned setting). Choosing the epoch on dev, as a run that reports on dev should not, "
                 "would have reported the right-hand figure:\n\n")
        text += _table(["model", "epoch chosen on validation", "its dev F1", "epoch dev would choose",
                        "its dev F1", "overstatement (F1 points)"], rows)
    return text


# --- markdown -----------------------------------------------------------------------------
def headline_row(m: dict) -> list[str]:
    s = m["speed"]
    return [_model_name(m), fmt_count(m["n_train"], m.get("n_train_available")),
            fmt_count(m["n_dev"], m.get("n_dev_available")), f"{m['f1']:.4f}", f"{m['klue_entity_macro_f1']:.4f}",
            f"{m['klue_char_macro_f1']:.4f}", fmt_seconds(s["train_seconds"]), fmt_rate(s["sentences_per_second"]),
            fmt_rate(s["chars_per_second"]), f"{s['latency_p50_ms']:.1f} / {s['latency_p95_ms']:.1f}",
            f"{m['size_bytes'] / 2**20:.1f}", fmt_memory(m["memory"])]


def fmt_memory(memory: dict) -> str:
    """Peak RSS of the whole run, and while predicting where it was measured apart."""
    predicting = memory.get("predict_peak_rss_mb")
    return f"{memory['peak_rss_mb']:,.0f}" + ("" if predicting is None else f" / {predicting:,.0f}")


def subsets_markdown(models: list[dict]) -> str:
    """One plain sentence per model saying which sentences it was trained and scored on."""
    lines = []
    for m in models:
        train = (f"trained on {fmt_count(m['n_train'], m.get('n_train_available'))} training sentences"
                 if m["n_train"] is not None else "trained on an unrecorded number of sentences")
        if m.get("reused"):
            train = f"reused from {m['model_dir']} ({train}; time and history from its kner.json)"
            if m.get("run_with"):
                train += ", run with " + ", ".join(f"{k}={v}" for k, v in m["run_with"].items())
        else:
            train += f" (cap: {m['train_limit_source']})"
        dev = f"scored on {fmt_count(m['n_dev'], m.get('n_dev_available'))} dev sentences (cap: {m['dev_limit_source']})"
        timing = (f"; timed over {len(m['speed']['predict_seconds'])} passes, latency over "
                  f"{m['speed']['latency_samples']} sentences")
        lines.append(f"- **{_model_name(m)}**: {train}; {dev}{timing}. Subsets are the first N sentences of the split.")
    return "\n".join(lines)


def per_type_markdown(models: list[dict]) -> str:
    header = ["model", *LABELS]
    rows = [[_model_name(m), *(f"{m['per_type'][t]['f1']:.4f}" for t in LABELS)] for m in models]
    if len({m["n_dev"] for m in models}) == 1:  # supports are comparable only on the same dev slice
        rows.append(["gold entities in dev", *(f"{models[0]['per_type'][t]['support']:,}" for t in LABELS)])
    return _table(header, rows)


def epoch_log_markdown(family: str, history: list[dict]) -> str:
    """A training log: one row per epoch, the best validation F1 in bold, then best / mean lines."""
    scored = [h for h in history if h.get("valid_f1") is not None]
    best = max(scored, key=lambda h: h["valid_f1"]) if scored else None
    monitored = any(h.get("dev_f1") is not None for h in history)
    rows = []
    for h in history:
        f1 = "–" if h.get("valid_f1") is None else f"{h['valid_f1']:.4f}"
        if h is best:
            f1 = f"**{f1}** (best)"
        row = [str(h["epoch"]), f"{h['seconds']:.1f}", f"{h['train_loss']:.4f}", f1]
        rows.append(row + (["–" if h.get("dev_f1") is None else f"{h['dev_f1']:.4f}"] if monitored else []))
    header = ["epoch", "seconds", "train loss", "validation F1"] + (["dev F1 (monitored, unused)"] if monitored else [])
    text = [f"### {family}", "", _table(header, rows), ""]
    seconds = [h["seconds"] for h in history]
    summary = (f"{len(history)} epoch{'s' if len(history) != 1 else ''}, {fmt_seconds(sum(seconds))} of training,"
               f" mean {statistics.mean(seconds):.1f} s per epoch.")
    if best is not None:
        summary += (f" Best validation F1 {best['valid_f1']:.4f} at epoch {best['epoch']} (the saved model is that"
                    f" epoch's); mean over epochs {statistics.mean(h['valid_f1'] for h in scored):.4f}.")
        sizes = {h.get("valid_sentences") for h in scored} - {None}
        if sizes:
            summary += f" Scored on {max(sizes):,} held-out sentences each epoch."
    text.append(summary)
    return "\n".join(text)


def extras_markdown(family: str, extras: dict) -> str:
    """A flat dict as a two-column table; a dict of dicts with one row per key."""
    def cell(v: object) -> str:  # fractions (F1, ratios) to 4 places, rates such as sentences/s to 1
        if isinstance(v, float):
            return f"{v:.4f}" if abs(v) < 1 else f"{v:,.1f}"
        return json.dumps(v, ensure_ascii=False) if isinstance(v, (list, dict)) else str(v)

    if extras and all(isinstance(v, dict) for v in extras.values()):
        columns = list(dict.fromkeys(k for v in extras.values() for k in v))
        rows = [[name, *(cell(v.get(c, "–")) for c in columns)] for name, v in extras.items()]
        table = _table(["", *columns], rows)
    else:
        table = _table(["", "value"], [[k, cell(v)] for k, v in extras.items()])
    return f"### {family}\n\n{table}"


def render_markdown(result: dict, files: dict[str, str] | None = None) -> str:
    files = files or {}
    ok = [m for m in result["models"] if "error" not in m]
    failed = [m for m in result["models"] if "error" in m]
    s = result["settings"]
    parts = ["# kner benchmark", "",
             f"KLUE NER v1.1 dev, data from `{s['data']}`, generated {result['generated_at']}. "
             "F1 are fractions (0–1): micro F1 is strict entity-level over the original characters; "
             "the KLUE figures are computed as the KLUE baseline does.", ""]
    if ok:
        parts += [_table(HEADLINE, [headline_row(m) for m in ok]), "", subsets_markdown(ok), ""]
        parts += ["## How each model chose its epoch", "", selection_markdown(ok), ""]
        families = result.get("families") or aggregate_seeds(ok)
        if any(len(e["runs"]) > 1 for e in families.values()):
            parts += ["## Seeds", "", seeds_markdown(families), ""]
    if failed:
        parts += ["## Failed", "", *(f"- **{_model_name(m)}**: {m['error']}" for m in failed), ""]
    if "throughput" in files:
        parts += [f"![F1 against inference throughput]({files['throughput']})", ""]
    if ok:
        parts += ["## F1 per entity type", "", per_type_markdown(ok), ""]
        if "per_type" in files:
            parts += [f"![F1 per entity type]({files['per_type']})", ""]
    trained = [m for m in ok if m.get("history")]
    if trained:
        parts += ["## Training logs (per epoch)", ""]
        parts += [epoch_log_markdown(_model_name(m), m["history"]) + "\n" for m in trained]
        if "epochs" in files:
            parts += [f"![validation F1 per epoch]({files['epochs']})", ""]
    with_extras = [m for m in ok if m.get("extras")]
    if with_extras:
        parts += ["## Family-specific evaluations", ""]
        parts += [extras_markdown(_model_name(m), m["extras"]) + "\n" for m in with_extras]
    parts += [_analysis_report().markdown(result, files)]
    parts += ["## How the figures were measured", "",
              "- Each model ran in its own process; peak RSS is that process's high-water mark (data loading, "
              "training and evaluation together), then the high-water mark of the timed predictions alone "
              "(from the resident size when they began: the loaded or trained model and its data).",
              f"- sent/s and char/s: the whole dev slice through `predict` in one call, median of "
              f"{s['repeats']} timed passes after a warm-up on a few sentences.",
              f"- p50/p95 ms: `predict([text])` on up to {s['latency_samples']} dev sentences spread evenly over the slice.",
              "- size MB: the files `kner.load` reads (MiB; not checkpoints or exports); train time: wall time of `fit`.", "",
              "## Machine", "", machine_markdown(result["machine"]), ""]
    return "\n".join(parts)


# --- the README's results table -------------------------------------------------------------
RESULTS_START, RESULTS_END = "<!-- results:start -->", "<!-- results:end -->"


def results_table(result: dict) -> str:
    """The README's results: one row per family from one benchmark's report.json (mean ± sd over
    its seeds, speed and size of its best run), headed by the machine, date, recipe and seeds."""
    ok = [m for m in result["models"] if "error" not in m]
    families = result.get("families") or aggregate_seeds(ok)
    s = result["settings"]
    rows = []
    for family, e in families.items():
        best = next(m for m in ok if m.get("name", family) == e["f1"]["best_run"])
        sp = best["speed"]
        rows.append([f"`{family}`", fmt_count(best["n_train"], best.get("n_train_available")),
                     fmt_count(best["n_dev"], best.get("n_dev_available")), fmt_mean_sd(e["f1"], len(e["runs"])),
                     f"{e['f1']['best']:.4f}", f"{e['klue_entity_macro_f1']['mean']:.4f}",
                     f"{e['klue_char_macro_f1']['mean']:.4f}", fmt_seconds(sp["train_seconds"]),
                     fmt_rate(sp["sentences_per_second"]), f"{sp['latency_p50_ms']:.1f} / {sp['latency_p95_ms']:.1f}",
                     f"{best['size_bytes'] / 2**20:.0f} MB", fmt_memory(best["memory"])])
    header = ["model", "train sents", "dev sents", "micro F1 (mean ± sd)", "best", "KLUE entity macro F1",
              "KLUE char macro F1", "train time (best run)", "sent/s", "p50 / p95 ms", "size",
              "peak RSS MB (run / predicting)"]
    selection = ("dev not used for selection: epochs and tuned settings chosen on a validation split held out "
                 "of train" if s.get("select_on", "validation") == "validation"
                 else "**epochs chosen on dev itself (optimistic)**")
    machine = result["machine"]
    seeds = s.get("seeds", 1)
    seeds = ",".join(f"{k}={v}" for k, v in seeds.items()) if isinstance(seeds, dict) else seeds
    head = (f"One `kner benchmark{' --recipe ' + s['recipe'] if s.get('recipe') else ''} --seeds {seeds}` "
            f"run, finished {result['generated_at'][:16].replace('T', ' ')}, on {machine_line(machine)}, "
            f"{machine.get('ram_gb', '?')} GB RAM, torch {machine.get('torch', 'not installed')}; "
            f"{selection}. Generated by `kner results` from its report.json.")
    resumed = sorted({m.get("machine_line") for m in ok if m.get("machine_line")})
    if len(resumed) > 1:
        head += " Parts ran on: " + "; ".join(resumed) + "."
    return f"{head}\n\n{_table(header, rows)}"


def replace_results(readme: str, table: str) -> str:
    """``readme`` with the text between the results markers replaced by ``table``."""
    start, end = readme.find(RESULTS_START), readme.find(RESULTS_END)
    if start < 0 or end < start:
        raise ValueError(f"the README has no {RESULTS_START} ... {RESULTS_END} markers to put the table between")
    return readme[: start + len(RESULTS_START)] + "\n" + table + "\n" + readme[end:]


# --- plots --------------------------------------------------------------------------------
def write_plots(result: dict, out: Path) -> dict[str, Path]:
    """The plots that apply: F1 against throughput, per-type F1, and F1 per epoch."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    ok = [m for m in result["models"] if "error" not in m]
    written: dict[str, Path] = {}
    if not ok:
        return written
    for key, name, draw in (("throughput", PLOT_THROUGHPUT, _plot_throughput), ("per_type", PLOT_PER_TYPE, _plot_per_type),
                            ("epochs", PLOT_EPOCHS, _plot_epochs)):
        fig = draw(plt, ok)
        if fig is not None:
            fig.savefig(out / name, dpi=120, bbox_inches="tight")
            plt.close(fig)
            written[key] = out / name
    return written


def _plot_throughput(plt, models: list[dict]):
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for m in models:
        x, y = m["speed"]["sentences_per_second"], m["f1"]
        ax.scatter(x, y, s=60, zorder=3)
        ax.annotate(f"{_model_name(m)} ({y:.3f})", (x, y), textcoords="offset points", xytext=(6, 6))
    ax.set_xscale("log")
    ax.margins(x=0.25, y=0.15)  # room for the labels of the extreme points
    ax.set_xlabel("inference throughput, batched (dev sentences/s, log scale)")
    ax.set_ylabel("dev micro F1")
    ax.set_title("F1 against inference speed")
    ax.grid(True, which="both", alpha=0.3)
    return fig


def _plot_per_type(plt, models: list[dict]):
    import numpy as np

    fig, ax = plt.subplots(figsize=(8, 4.5))
    width = 0.8 / len(models)
    x = np.arange(len(LABELS))
    for i, m in enumerate(models):
        ax.bar(x + (i - (len(models) - 1) / 2) * width, [m["per_type"][t]["f1"] for t in LABELS], width,
               label=_model_name(m), zorder=3)
    ax.set_xticks(x, LABELS)
    ax.set_ylim(0, 1)
    ax.set_ylabel("dev F1")
    ax.set_title("F1 per entity type")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside, so it never hides a bar
    return fig


def _plot_epochs(plt, models: list[dict]):
    trained = [m for m in models if any(h.get("valid_f1") is not None for h in m.get("history", []))]
    if not trained:
        return None
    fig, (f1_ax, loss_ax) = plt.subplots(1, 2, figsize=(11, 4))
    for m in trained:
        scored = [h for h in m["history"] if h.get("valid_f1") is not None]
        line, = f1_ax.plot([h["epoch"] for h in scored], [h["valid_f1"] for h in scored], marker="o",
                           label=_model_name(m))
        best = max(scored, key=lambda h: h["valid_f1"])
        f1_ax.scatter(best["epoch"], best["valid_f1"], marker="*", s=200, color=line.get_color(), zorder=3)
        loss_ax.plot([h["epoch"] for h in m["history"]], [h["train_loss"] for h in m["history"]], marker="o",
                     label=_model_name(m))
    f1_ax.set(xlabel="epoch", ylabel="validation micro F1", title="validation F1 per epoch (star: kept)")
    loss_ax.set(xlabel="epoch", ylabel="train loss", title="training loss per epoch")
    for ax in (f1_ax, loss_ax):
        ax.grid(True, alpha=0.3)
        ax.legend()
        ax.xaxis.get_major_locator().set_params(integer=True)
    return fig
