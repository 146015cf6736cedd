"""``kner benchmark``: train (or reuse), score and time model families on KLUE NER; write a report.

Each family runs in its own child process (``multiprocessing`` spawn context), so its peak
resident memory is its own and one model's imports and caches cannot slow or bloat the next.
The child trains the family on the train split (or reuses ``OUT/models/<family>/`` when that
folder holds a ``kner.json``), scores it on dev with :func:`kner.scoring.score`, and measures:

- training wall time (and, for epoch-trained families, the per-epoch log in ``tagger.history``);
  a reused model's time and history come from its ``kner.json``, and it runs with the ``--set``
  values of its family's ``runtime_settings`` (precision, batch size…; others need ``--retrain``);
- batched throughput: the whole dev slice through ``predict`` ``repeats`` times after a short
  warm-up, median wall time, reported as sentences/s and characters/s;
- single-sentence latency: ``predict([text])`` for ``latency_samples`` dev sentences spread
  evenly over the slice, p50 and p95 in milliseconds;
- size on disk: the apparent size of every file in the saved model folder;
- peak RSS: training runs in one child and the measurements in a second one that loads the saved
  model, so the figure while predicting holds nothing training left behind; the overall peak is
  the larger of the two children's, and the peak CUDA memory when the family used torch on a GPU.

The dev scores and speed figures (with a one-line machine description) are also written into
the model folder's ``kner.json`` under ``metrics``, so its model card (``kner push``) can show
them; the weights and the training record of a reused model are left as they were.

Subsets: a limit given by the caller wins; otherwise a family's ``benchmark_limits`` class
attribute (e.g. ``{"train": 2000, "dev": 500}``) caps it; the report states every model's
train and dev sentence counts. ``benchmark_limits`` may also cap ``repeats`` and
``latency_samples`` for families whose every pass over dev takes minutes (the sLLM); the
report states the numbers each model got.

Learning curves: ``train_sizes`` adds, per family, one run on the first N training sentences for
each N below its cap (named ``<family>-n<N>``, first seed only; validation held out of those N as
in every run, by a rule on each text alone, so the training subsets are nested); the full run is the
last point.

Error analysis: each run also saves its dev predictions to ``OUT/parts/<name>.predictions.jsonl``,
and the parent analyses them against the gold dev sentences (:mod:`kner.analysis_report`).

Optional hook for family-specific evaluations: a tagger may define

    def benchmark_extras(self, dev: list[Example]) -> dict: ...

It is called once after the standard measurements with the same dev slice. Return a
JSON-serialisable dict, either flat (``{"name": value}``, rendered as a two-column table) or one
level nested (``{"row": {"column": value}}``, rendered with one row per key), e.g. the sllm family
comparing constrained with unconstrained decoding; the bert family's comparison with its rival
runtimes is benchmark code (:func:`kner.bert_speed.benchmark_extras`). It lands under ``extras`` in report.json and
as a small table in report.md. If the hook raises, the error text is recorded under
``extras["error"]`` and the rest of the benchmark stands.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import multiprocessing
import re
import resource
import shutil
import statistics
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import psutil
from tqdm import tqdm

from . import data as kdata
from . import models
from . import recipe as krecipe
from .analysis import learning_curves
from .analysis_report import analyse, predictions_path, save_predictions
from .machine import machine_line
from .models.base import META_FILE, Tagger, write_meta
from .scoring import score

METRIC_KEYS = ("f1", "precision", "recall", "klue_entity_macro_f1", "klue_char_macro_f1", "per_type", "n_gold", "n_pred")
WARMUP_SENTENCES = 8


class BenchmarkError(RuntimeError):
    """One or more families failed; the report was still written for the others."""


def run_benchmark(families: list[str], data: str | None, out: str | Path, *, train_limit: int | None = None,
                  dev_limit: int | None = None, overrides: dict[str, dict[str, object]] | None = None,
                  reuse: bool = True, repeats: int = 3, latency_samples: int = 200, recipe: dict | None = None,
                  seeds: int | dict[str, int] = 1, resume: bool = False, select_on: str = "validation",
                  valid_fraction: float = kdata.VALID_FRACTION, monitor_dev: bool = False,
                  train_sizes: Sequence[int] = (), curve_families: Sequence[str] | None = None) -> dict:
    """Benchmark ``families`` and write ``OUT/report.md``, ``OUT/report.json`` and PNG plots.

    Each family's settings are its defaults under the ``recipe`` under ``overrides``; a family
    with a ``seed`` setting is trained ``seeds`` times (seed, seed+1, ...; a dict gives a number per
    family, 1 for the others); ``train_sizes`` adds learning-curve runs (for ``curve_families``
    only, when given, so a slow family can stay out of them). Every finished run is
    kept in ``OUT/parts/``, so ``resume`` completes an interrupted benchmark with the rest.
    Returns the report as a dict (the content of report.json). Raises :class:`BenchmarkError`
    after writing the report if any run failed.
    """
    overrides = overrides or {}
    _check_arguments(families, overrides, repeats, latency_samples, seeds, train_sizes)
    curve_families = families if curve_families is None else list(curve_families)
    if set(curve_families) - set(families):
        raise ValueError(f"learning curves asked for {', '.join(sorted(set(curve_families) - set(families)))}, "
                         "which is not benchmarked; name it in the models too")
    kdata.load_split("dev", data, limit=1)  # a wrong --data fails here, before any child starts
    out = Path(out)
    (out / "models").mkdir(parents=True, exist_ok=True)
    (out / "parts").mkdir(exist_ok=True)
    settings = {"data": str(kdata.resolve_data_dir(data) or "Hugging Face hub: klue/ner"),
                "train_limit": train_limit, "dev_limit": dev_limit, "repeats": repeats,
                "latency_samples": latency_samples, "reuse": reuse, "recipe": recipe and recipe["name"],
                "seeds": seeds, "select_on": select_on, "valid_fraction": valid_fraction, "monitor_dev": monitor_dev,
                "train_sizes": sorted(set(train_sizes)), "curve_families": curve_families if train_sizes else [],
                "resume": resume}
    jobs = [job for family in families
            for job in _jobs(family, recipe, overrides.get(family, {}),
                             seeds if isinstance(seeds, int) else seeds.get(family, 1),
                             {**settings, "data": data, "out": str(out)},
                             train_sizes if family in curve_families else ())]
    results = []
    for i, job in enumerate(jobs, 1):
        part = out / "parts" / f"{job['name']}.json"
        if resume and part.is_file():
            results.append(_resumed(part, job))
            print(f"[benchmark {i}/{len(jobs)}] {job['name']}: kept from {part}", file=sys.stderr, flush=True)
            continue
        print(f"[benchmark {i}/{len(jobs)}] {job['name']}", file=sys.stderr, flush=True)
        result = _run_in_child(job)
        if "error" not in result:
            result |= {"job": _job_key(job), "machine_line": machine_line(),
                       "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
            part.write_text(json.dumps(result, ensure_ascii=False), encoding="utf-8")
        results.append(result)
    from . import report  # matplotlib and torch (for the machine) load only now, after the children ran
    from .machine import describe_machine

    result = {"generated_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": describe_machine(),
              "settings": settings, "models": results, "families": report.aggregate_seeds(results),
              "learning_curves": learning_curves(results), "analysis": _analysis(results, data, out)}
    report.write_report(result, out)
    failed = [r["name"] for r in results if "error" in r]
    if failed:
        raise BenchmarkError(f"{', '.join(failed)} failed (see {out / 'report.md'} and the log above); "
                             "the report covers the others")
    return result


def _analysis(results: list[dict], data: str | None, out: Path) -> dict:
    try:
        return analyse(results, kdata.load_split("dev", data), out / "parts")
    except Exception as exc:  # hours of training must not lose their report to a fault in the analysis
        traceback.print_exc()
        return {"models": {}, "skipped": {}, "error": f"{type(exc).__name__}: {exc}"}


def _jobs(family: str, recipe: dict | None, given: dict, seeds: int, settings: dict,
          train_sizes: Sequence[int] = ()) -> list[dict]:
    """One job per seed of ``family`` (its resolved settings, the model folder and the data caps),
    then one per train size below the family's training cap, with the first seed."""
    cls = models.get(family)
    config, run = krecipe.resolve(recipe, family, cls.Config, given)
    base_seed = config.get("seed", getattr(cls.Config(), "seed", None))
    runs = [None] if base_seed is None else [base_seed + k for k in range(seeds)]
    jobs = []
    for k, seed in enumerate(runs):
        name = family if k == 0 else f"{family}-seed{seed}"
        jobs.append({**settings, "family": family, "name": name, "seed": seed,
                     "overrides": config | ({} if seed is None else {"seed": seed}),
                     "train_limit": settings["train_limit"] or run.get("train_limit"),
                     "dev_limit": settings["dev_limit"] or run.get("dev_limit"), "train_size": None})
    cap = jobs[0]["train_limit"] or cls.benchmark_limits.get("train")
    for size in sorted(set(train_sizes)):
        if cap is None or size < cap:  # a size at or above the cap would repeat the full run
            jobs.append({**jobs[0], "name": f"{family}-n{size}", "train_limit": size, "train_size": size})
    return jobs


def _job_key(job: dict) -> dict:
    """What must match for a finished run to count towards a resumed benchmark."""
    return {k: job[k] for k in ("family", "name", "seed", "overrides", "train_limit", "dev_limit", "select_on",
                                "valid_fraction", "data")}


def _resumed(part: Path, job: dict) -> dict:
    result = json.loads(part.read_text(encoding="utf-8"))
    if result.get("job") != json.loads(json.dumps(_job_key(job))):
        raise ValueError(f"{part} was run with other settings ({result.get('job')}); run without --resume, "
                         "or with the settings it was run with")
    return result | {"resumed": True}


def _check_arguments(families: list[str], overrides: dict, repeats: int, latency_samples: int,
                     seeds: int | dict[str, int], train_sizes: Sequence[int]) -> None:
    if not families:
        raise ValueError(f"name at least one model family to benchmark ({', '.join(models.names())})")
    counts = [seeds] if isinstance(seeds, int) else list(seeds.values())
    if repeats < 1 or latency_samples < 1 or min(counts, default=1) < 1:
        raise ValueError(f"repeats, latency_samples and seeds must be at least 1, got {repeats}, {latency_samples} "
                         f"and {seeds}")
    if isinstance(seeds, dict) and set(seeds) - set(families):
        raise ValueError(f"--seeds names {', '.join(sorted(set(seeds) - set(families)))}, which is not benchmarked")
    if min(train_sizes, default=1) < 1:
        raise ValueError(f"train sizes must be at least 1, got {list(train_sizes)}")
    for family in families:
        known = {f.name for f in dataclasses.fields(models.get(family).Config)}
        unknown = set(overrides.get(family, {})) - known
        if unknown:
            raise ValueError(f"{family} has no hyperparameter {', '.join(sorted(unknown))}; "
                             f"choose from {', '.join(sorted(known))}")


def _run_in_child(job: dict) -> dict:
    """Train (unless the model folder holds one to reuse) in one fresh interpreter, then load the
    saved model and measure it in another: prediction's memory then holds no training leftovers."""
    trained = None
    if not (job["reuse"] and (_model_dir(job) / META_FILE).is_file()):
        trained = _in_child(train_family, job)
        if "error" in trained:
            return trained
    return _in_child(measure_family, job, trained)


def _in_child(target, job: dict, *args) -> dict:
    """``target(job, *args)`` in a spawned process; its answer comes back through a file."""
    answer = Path(job["out"]) / f".{job['name']}.result.json"
    answer.unlink(missing_ok=True)
    child = multiprocessing.get_context("spawn").Process(target=_child_main, args=(target, job, args, str(answer)),
                                                         name=f"kner-benchmark-{job['name']}")
    child.start()
    child.join()
    if child.exitcode is not None and child.exitcode < 0:
        return {"family": job["family"], "name": job["name"], "error": f"the benchmark process was killed by signal {-child.exitcode}"
                + (" (SIGKILL: often the out-of-memory killer)" if child.exitcode == -9 else "")}
    if child.exitcode != 0 or not answer.is_file():
        return {"family": job["family"], "name": job["name"], "error": f"the benchmark process exited with code {child.exitcode}"}
    result = json.loads(answer.read_text(encoding="utf-8"))
    answer.unlink()
    return result


def _child_main(target, job: dict, args: tuple, answer: str) -> None:
    try:
        result = target(job, *args)
    except Exception as exc:  # recorded in the report, and the traceback goes to the log
        traceback.print_exc()
        result = {"family": job["family"], "name": job["name"], "error": f"{type(exc).__name__}: {exc}"}
    Path(answer).write_text(json.dumps(result, ensure_ascii=False), encoding="utf-8")


def peak_rss_mb() -> float:
    """This process's peak resident set size so far, plus that of its live child processes (a
    family's worker pool), in MiB: a sum of peaks, so never less than the peak of the sum.

    Linux: ``VmHWM`` from /proc/PID/status, because ``ru_maxrss`` survives exec and so would
    report the parent's size for a spawned child. Elsewhere ``ru_maxrss`` (macOS counts bytes),
    for this process alone.
    """
    own = _vm_hwm_mb("self")
    if own is None:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / (2**20 if sys.platform == "darwin" else 2**10)
    return own + sum(_vm_hwm_mb(str(child.pid)) or 0.0 for child in psutil.Process().children(recursive=True))


def _vm_hwm_mb(pid: str) -> float | None:
    try:
        match = re.search(r"^VmHWM:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.MULTILINE)
    except OSError:  # not Linux, or the child has just exited
        return None
    return int(match.group(1)) / 2**10 if match else None


def reset_peak_rss() -> bool:
    """Start a new peak-RSS window, so the next :func:`peak_rss_mb` covers what runs from now on
    (Linux: writing 5 to /proc/self/clear_refs resets VmHWM); False where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


NOT_MODEL = {"checkpoints", "onnx"}  # beside a model: a kner train run's checkpoints, an ONNX export


def model_bytes(directory: Path) -> int:
    """Apparent size of the files ``kner.load`` reads: the model folder's, subfolders included (an
    ensemble's members, a Bi-LSTM-CRF's encoder), except a run's checkpoints/ and an onnx/ export."""
    return sum(p.stat().st_size for p in directory.rglob("*")
               if p.is_file() and not NOT_MODEL & set(p.relative_to(directory).parts[:-1]))


def _limit(given: int | None, cls: type[Tagger], split: str) -> tuple[int | None, str]:
    if given is not None:
        return given, "caller"
    if split in cls.benchmark_limits:
        return cls.benchmark_limits[split], f"{cls.family} default (benchmark_limits)"
    return None, "full split"


def _model_dir(job: dict) -> Path:
    return Path(job["out"]) / "models" / job["name"]


def _splits(job: dict) -> tuple[kdata.Splits, str, str]:
    cls = models.get(job["family"])
    train_cap, train_source = _limit(job["train_limit"], cls, "train")
    dev_cap, dev_source = _limit(job["dev_limit"], cls, "dev")
    splits = kdata.prepare_splits(job["data"], train_cap, dev_cap, job["select_on"], job["valid_fraction"],
                                  hold_out=cls.selects)
    return splits, train_source, dev_source


def train_family(job: dict) -> dict:
    """Train one family and save it to ``OUT/models/<name>`` (runs inside the first child process)."""
    cls, out = models.get(job["family"]), Path(job["out"])
    splits, _, _ = _splits(job)
    tagger = cls(**_with_checkpoints(cls, job, out))
    tagger.provenance = {"selection": splits.selection, "recipe": job["recipe"]}
    if job["monitor_dev"] and job["select_on"] != "dev":
        tagger.monitor = splits.dev
    _train(tagger, splits)
    _save(tagger, _model_dir(job), {"n_train": len(splits.train), "n_valid": len(splits.valid)})
    return {"train_peak_rss_mb": peak_rss_mb(), **{f"train_{k}": v for k, v in _gpu_peak().items()}}


def measure_family(job: dict, trained: dict | None = None) -> dict:
    """Load, score and time one family's saved model (runs inside the second child process);
    ``trained`` is what :func:`train_family` answered when this run trained it, else it was reused."""
    family, out = job["family"], Path(job["out"])
    cls = models.get(family)
    splits, train_source, dev_source = _splits(job)
    dev = splits.dev
    baseline_rss = psutil.Process().memory_info().rss / 2**20
    model_dir = _model_dir(job)
    reused, trained = trained is None, trained or {}
    tagger, n_train = _reuse(model_dir, family, job["overrides"])
    texts = [ex.text for ex in dev]
    repeats = min(job["repeats"], cls.benchmark_limits.get("repeats", job["repeats"]))
    latency_samples = min(job["latency_samples"], cls.benchmark_limits.get("latency_samples", job["latency_samples"]))

    peak_total, windowed = peak_rss_mb(), reset_peak_rss()  # the predict window starts at the current size
    tagger.predict(texts[:WARMUP_SENTENCES])  # lazy initialisation and caches stay out of the timings
    seconds, predicted = [], None
    for _ in tqdm(range(repeats), desc=f"{family} dev throughput", unit="pass", leave=False):
        start = time.perf_counter()
        spans = tagger.predict(texts)
        seconds.append(time.perf_counter() - start)
        predicted = predicted or spans
    predict_peak = peak_rss_mb() if windowed else None
    scores = score(dev, predicted).to_dict()
    save_predictions(predictions_path(out / "parts", job["name"]), dev, predicted)
    metrics = {k: scores[k] for k in METRIC_KEYS}

    latencies = _latencies(tagger, texts, latency_samples, family)
    extras = _extras(tagger, dev)
    median = statistics.median(seconds)
    n_chars = sum(len(t) for t in texts)
    result = {
        "family": family, "name": job["name"], "seed": job["seed"], "train_size": job.get("train_size"),
        "config": dataclasses.asdict(tagger.config),
        "n_train": n_train, "n_train_available": splits.n_train_available, "train_limit_source": train_source,
        "n_dev": len(dev), "n_dev_available": splits.n_dev_available, "dev_limit_source": dev_source,
        "selection": tagger.provenance.get("selection") or {"on": "unknown (a model saved before kner recorded it)",
                                                            "note": "selection not recorded"},
        "dev_chars": n_chars,
        **metrics,
        "history": [dataclasses.asdict(r) for r in tagger.history],
        "reused": reused,
        "run_with": cls.runtime_overrides(job["overrides"]) if reused else {},
        "model_dir": str(model_dir),
        "speed": {
            "train_seconds": tagger.train_seconds,
            "predict_seconds": seconds,
            "predict_seconds_median": median,
            "sentences_per_second": len(dev) / median,
            "chars_per_second": n_chars / median,
            "latency_samples": len(latencies),
            "latency_p50_ms": float(np.percentile(latencies, 50)),
            "latency_p95_ms": float(np.percentile(latencies, 95)),
        },
        "memory": {"peak_rss_mb": max(peak_total, peak_rss_mb(), trained.get("train_peak_rss_mb", 0.0)),
                   "predict_peak_rss_mb": predict_peak, "baseline_rss_mb": baseline_rss, **trained, **_gpu_peak()},
    }
    if extras is not None:
        result["extras"] = extras
    _record(model_dir, {**metrics, "n_dev": len(dev), "speed": {
        k: result["speed"][k] for k in ("sentences_per_second", "chars_per_second", "latency_p50_ms", "latency_p95_ms")
    } | {"machine": machine_line()} | ({"run_with": result["run_with"]} if result["run_with"] else {})})
    result["size_bytes"] = model_bytes(model_dir)  # counts the kner.json just updated
    return result


def _reuse(model_dir: Path, family: str, overrides: dict) -> tuple[Tagger, int | None]:
    """The saved model, run with the overrides that are runtime settings of its family; the others
    would need training, so they are reported and left out."""
    meta = models.read_meta(model_dir)
    if meta["family"] != family:
        raise models.ModelDirError(f"{model_dir} holds a {meta['family']} model, not {family}; "
                                   "remove it or benchmark with --retrain")
    runtime = models.get(family).runtime_overrides(overrides)
    differing = {k: v for k, v in overrides.items() if k not in runtime and meta.get("config", {}).get(k) != v}
    if differing:
        print(f"warning: reusing {model_dir}, whose config differs from the overrides {differing}; "
              "pass --retrain to train with them", file=sys.stderr, flush=True)
    return models.load(model_dir, **runtime), meta.get("metrics", {}).get("n_train")


def _with_checkpoints(cls: type[Tagger], job: dict, out: Path) -> dict:
    overrides = dict(job["overrides"])
    fields = {f.name for f in dataclasses.fields(cls.Config)}
    if "checkpoint_dir" in fields:
        # Kept beside, not inside, the model folder so they do not count towards its size.
        overrides.setdefault("checkpoint_dir", str(out / "checkpoints" / job["name"]))
        if job.get("resume") and "resume" in fields:
            overrides.setdefault("resume", True)  # an interrupted family continues from its last epoch
    return overrides


def _train(tagger: Tagger, splits: kdata.Splits) -> Tagger:
    print(f"training {tagger.family} on {len(splits.train)} sentences; {splits.selection['note']}",
          file=sys.stderr, flush=True)
    start = time.perf_counter()
    tagger.fit(splits.train, splits.valid)
    if tagger.train_seconds is None:
        tagger.train_seconds = time.perf_counter() - start
    return tagger


def _save(tagger: Tagger, model_dir: Path, metrics: dict) -> None:
    """Write to a side folder first, so a crash never leaves half a model where a good one was."""
    partial = model_dir.with_name(f".{model_dir.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    tagger.save(partial, metrics=metrics)
    shutil.rmtree(model_dir, ignore_errors=True)
    partial.rename(model_dir)


def _record(model_dir: Path, metrics: dict) -> None:
    """Merge ``metrics`` into the folder's kner.json."""
    meta = models.read_meta(model_dir)
    meta["metrics"] = {**meta.get("metrics", {}), **metrics}
    write_meta(model_dir, meta)


def _latencies(tagger: Tagger, texts: list[str], samples: int, family: str) -> list[float]:
    """Milliseconds of ``predict([text])`` for ``samples`` texts spread evenly over ``texts``."""
    picks = np.linspace(0, len(texts) - 1, num=min(samples, len(texts))).round().astype(int)
    out = []
    for i in tqdm(picks, desc=f"{family} latency", unit="sent", leave=False):
        start = time.perf_counter()
        tagger.predict([texts[i]])
        out.append((time.perf_counter() - start) * 1000)
    return out


def _extras(tagger: Tagger, dev: list) -> dict | None:
    hook = getattr(tagger, "benchmark_extras", None)
    if tagger.family == "bert":  # its rivals (the pipeline, onnxruntime) are benchmark code, not the model's
        from .bert_speed import benchmark_extras

        hook = functools.partial(benchmark_extras, tagger)
    if not callable(hook):
        return None
    try:
        extras = hook(dev)
        json.dumps(extras)
        return extras
    except Exception as exc:  # a failing optional evaluation must not sink the standard figures
        traceback.print_exc()
        return {"error": f"{type(exc).__name__}: {exc}"}


def _gpu_peak() -> dict:
    torch = sys.modules.get("torch")  # only families that imported torch can have used a GPU
    if torch is None or not torch.cuda.is_available():
        return {}
    return {"gpu_peak_mb": torch.cuda.max_memory_allocated() / 2**20}


__all__ = ["BenchmarkError", "model_bytes", "measure_family", "peak_rss_mb", "run_benchmark", "train_family"]
