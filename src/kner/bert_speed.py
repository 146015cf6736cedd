"""The BERT family's rivals, side by side: ``transformers.pipeline`` and onnxruntime against
:class:`~kner.models.bert.BertTagger`'s own predict, on the same texts (``kner benchmark``'s
extras for bert runs). Benchmark code: the model itself knows nothing of these comparisons.

``python -m kner.bert_speed RUN_DIR --data DIR [--limit N] [--precision bf16]`` prints one JSON object.
"""
from __future__ import annotations

import argparse
import bisect
import copy
import dataclasses
import itertools
import json
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from .align import is_valid_iob2, piece_words, trim
from .models import hf_common, load
from .models.bert import BertTagger
from .onnx_backend import ONNX_FILE, ONNX_SUBDIR, export_onnx, load_onnx
from .types import Example, Span


def pipeline_spans(entities: list[dict], text: str, pieces: Sequence[tuple[int, int]] | None = None
                   ) -> list[Span] | None:
    """The pipeline's grouped entities as spans over ``text``; ``None`` when one of them has no
    offsets. An entity of nothing but whitespace (a lone SentencePiece ``▁`` tagged on its own)
    covers no character, so it is no span, as in kner's alignment. With ``pieces`` (the model
    pre-splits text, and the pipeline was given :func:`~kner.align.piece_words` joined by no
    delimiter) the pipeline's offsets index those words joined, and are mapped back to ``text``."""
    words = [text] if pieces is None else piece_words(text, pieces)
    origin = [0] if pieces is None else [s - (len(w) - (e - s)) for w, (s, e) in zip(words, pieces)]
    starts = list(itertools.accumulate((len(w) for w in words[:-1]), initial=0))  # of each word, joined
    joined = "".join(words)

    def to_text(i: int) -> int:  # a non-space character of `joined` -> its index in `text`
        w = bisect.bisect_right(starts, i) - 1
        return origin[w] + i - starts[w]

    spans = []
    for ent in entities:
        if ent.get("start") is None or ent.get("end") is None:
            return None
        start, end = trim(joined, ent["start"], ent["end"])  # SentencePiece offsets may include the space
        if start == end:
            continue
        spans.append(Span(to_text(start), to_text(end - 1) + 1, ent["entity_group"]))
    return sorted(spans)


def argmax_is_valid(tagger: BertTagger, texts: Sequence[str]) -> list[bool]:
    """Per one-window text: are the per-subword argmax tags already valid IOB2? There kner's
    constrained decoding and the pipeline read the same tags the same way, so their spans must
    agree; elsewhere the pipeline opens entities at orphan ``I-`` tags that kner never emits."""
    plain = copy.copy(tagger)
    plain.config = dataclasses.replace(tagger.config, constrained=False)
    return [is_valid_iob2(windows[0]) for windows in plain._window_tags(plain.encoder.encode(texts))]


def _timed(fn) -> tuple[object, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def compare_with_pipeline(tagger: BertTagger, texts: Sequence[str], pipeline_batch_sizes: Sequence[int] = (1, 32),
                          repeats: int = 3) -> dict:
    """Throughput of ``tagger.predict`` and of ``pipeline("token-classification",
    aggregation_strategy="simple")`` on the same model, device, precision and texts, in one run,
    and how often their spans are equal. Only texts that fit in one model window are used, because the
    pipeline truncates longer ones. The pipeline runs at each of ``pipeline_batch_sizes`` (1 is how
    it is called by default); kner and the pipeline take turns ``repeats`` times, so a slow spell
    of the machine hits both, and each speed-up is a ratio of median times. The headline
    ``speedup`` is against the pipeline's fastest batch size. Both are warmed up first."""
    from transformers import pipeline

    texts = [t for t in texts if t.strip()]
    fits = tagger.encoder.encode(texts)
    texts = [t for t, enc in zip(texts, fits) if len(enc.wins) == 1]
    if not texts:
        raise ValueError("no text fits in one window; pass shorter texts")
    tagger.model.eval()
    # A model that reads morphemes (pretokenize) is given to the pipeline with the same words and
    # word-reading tokenizer, so both see the same subwords; only kner is charged for the splitting.
    pieces = tagger.encoder.pieces(texts)
    pipe = pipeline("token-classification", model=tagger.model, aggregation_strategy="simple", device=tagger.device,
                    tokenizer=tagger.tokenizer if pieces is None else tagger.encoder.piece_tokenizer)
    inputs = texts if pieces is None else [piece_words(t, p) for t, p in zip(texts, pieces)]
    split = {} if pieces is None else {"is_split_into_words": True, "delimiter": ""}

    def run_pipeline(batch_size: int, items=inputs):  # under the tagger's precision (bf16 autocast on CPU…)
        with hf_common.autocast(tagger.device, tagger.precision):
            return pipe(items, batch_size=batch_size, **split)

    tagger.predict(texts[:64])
    run_pipeline(1, inputs[:8])
    ours_times, theirs_times, outputs = [], {bs: [] for bs in pipeline_batch_sizes}, {}
    for _ in range(repeats):
        ours, seconds = _timed(lambda: tagger.predict(texts))
        ours_times.append(seconds)
        for bs in pipeline_batch_sizes:
            outputs[bs], seconds = _timed(lambda: run_pipeline(bs))
            theirs_times[bs].append(seconds)
    ours_s = statistics.median(ours_times)
    theirs_s = {bs: statistics.median(times) for bs, times in theirs_times.items()}
    best_bs = min(theirs_s, key=theirs_s.get)
    valid_argmax = argmax_is_valid(tagger, texts)
    equal = {}  # per batch size: texts with equal spans, out of the comparable ones and of those with valid argmax
    for bs, out in outputs.items():
        mapped = [pipeline_spans(ents, t, None if pieces is None else p) for ents, t, p in zip(out, texts, pieces or texts)]
        pairs = [(a == b, ok) for a, b, ok in zip(ours, mapped, valid_argmax) if b is not None]
        equal[bs] = {"equal": sum(e for e, _ in pairs), "comparable": len(pairs),
                     "equal_valid": sum(e for e, ok in pairs if ok), "valid": sum(ok for _, ok in pairs)}
        if bs == best_bs:
            theirs, best_mapped = out, mapped
    n_chars = sum(len(t) for t in texts)
    return {
        "n_texts": len(texts), "n_chars": n_chars, "device": str(tagger.device), "precision": tagger.precision,
        "repeats": repeats,
        "ours_seconds": round(ours_s, 3), "ours_texts_per_s": round(len(texts) / ours_s, 1),
        "ours_seconds_each": [round(s, 3) for s in ours_times],
        "pipeline_seconds_by_batch_size": {bs: round(s, 3) for bs, s in theirs_s.items()},
        "pipeline_seconds_each": {bs: [round(s, 3) for s in times] for bs, times in theirs_times.items()},
        "pipeline_texts_per_s_by_batch_size": {bs: round(len(texts) / s, 1) for bs, s in theirs_s.items()},
        "speedup_by_batch_size": {bs: round(s / ours_s, 2) for bs, s in theirs_s.items()},
        "pipeline_best_batch_size": best_bs, "pipeline_texts_per_s": round(len(texts) / theirs_s[best_bs], 1),
        "speedup": round(theirs_s[best_bs] / ours_s, 2),
        "n_comparable": equal[best_bs]["comparable"], "n_equal_spans": equal[best_bs]["equal"],
        "n_valid_argmax": equal[best_bs]["valid"], "n_equal_spans_valid_argmax": equal[best_bs]["equal_valid"],
        "equal_spans_by_batch_size": {bs: f"{q['equal']}/{q['comparable']}; {q['equal_valid']}/{q['valid']} "
                                          "where the argmax tags are valid IOB2" for bs, q in equal.items()},
        "n_pipeline_blank_entities": sum(len(ents) - len(m) for ents, m in zip(theirs, best_mapped) if m is not None),
        "examples_differing": [{"text": t, "ours": [s.to_dict(t) for s in a], "pipeline": [s.to_dict(t) for s in b]}
                               for t, a, b in zip(texts, ours, best_mapped) if b is not None and a != b][:5],
    }


def compare_backends(run_dir: str | Path, texts: Sequence[str], repeats: int = 5,
                     onnx_path: str | Path | None = None, precision: str | None = None) -> dict:
    """Time ``predict(texts)`` with torch (in ``precision``, default the run's) and with
    onnxruntime (fp32), passes alternating, medians; and count the texts whose spans differ.
    Exports first when the run has no ONNX file yet."""
    run_dir = Path(run_dir)
    if onnx_path is None and not (run_dir / ONNX_SUBDIR / ONNX_FILE).is_file():
        export_onnx(run_dir)
    torch_tagger = load(run_dir, **({"precision": precision} if precision else {}))
    onnx_tagger = load_onnx(run_dir, onnx_path)
    texts = list(texts)
    for tagger in (torch_tagger, onnx_tagger):
        tagger.predict(texts[:16])  # lazy initialisation stays out of the timings
    seconds: dict[str, list[float]] = {"torch": [], "onnx": []}
    spans: dict[str, list[list[Span]]] = {}
    for _ in range(repeats):
        for name, tagger in (("torch", torch_tagger), ("onnx", onnx_tagger)):
            spans[name], took = _timed(lambda: tagger.predict(texts))
            seconds[name].append(took)
    torch_median, onnx_median = statistics.median(seconds["torch"]), statistics.median(seconds["onnx"])
    return {
        "n_texts": len(texts), "repeats": repeats, "torch_precision": torch_tagger.precision,
        "torch_seconds": seconds["torch"], "onnx_seconds": seconds["onnx"],
        "torch_median_seconds": torch_median, "onnx_median_seconds": onnx_median,
        "onnx_speedup": torch_median / onnx_median,
        "identical_spans": spans["torch"] == spans["onnx"],
        "texts_with_different_spans": sum(a != b for a, b in zip(spans["torch"], spans["onnx"])),
    }


def benchmark_extras(tagger: BertTagger, dev: list[Example]) -> dict:
    """``kner benchmark``'s side-by-side of inference runtimes on the same dev texts (those that
    fit one window, since the pipeline truncates; at most 500): ``tagger.predict``, the
    ``transformers`` token-classification pipeline, and onnxruntime on an export of ``tagger``."""
    texts = [ex.text for ex in dev if ex.text.strip()]
    texts = [t for t, enc in zip(texts, tagger.encoder.encode(texts)) if len(enc.wins) == 1][:500]
    pipe = compare_with_pipeline(tagger, texts)
    with tempfile.TemporaryDirectory() as tmp:
        tagger.save(tmp)
        onnx = compare_backends(tmp, texts, precision=tagger.precision)
    n, reps = len(texts), onnx["repeats"]
    # Each comparison times kner's torch predict alongside its rivals; a ratio is to that pairing's torch row.
    rows = {f"kner predict, torch, {pipe['precision']} (median of {pipe['repeats']}, taking turns with the pipeline)": {
        "texts": n, "sentences_per_s": pipe["ours_texts_per_s"], "speed_vs_kner_torch": 1.0,
        "spans_equal_to_kner_torch": f"{n}/{n}"}}
    for bs, per_s in pipe["pipeline_texts_per_s_by_batch_size"].items():
        called = " (its default)" if bs == 1 else ""
        rows[f"transformers pipeline, batch {bs}{called}, {pipe['precision']} (median of {pipe['repeats']})"] = {
            "texts": n, "sentences_per_s": per_s, "speed_vs_kner_torch": round(1 / pipe["speedup_by_batch_size"][bs], 3),
            "spans_equal_to_kner_torch": pipe["equal_spans_by_batch_size"][bs]}
    rows[f"kner predict, torch, {tagger.precision} (median of {reps}, taking turns with onnxruntime)"] = {
        "texts": n, "sentences_per_s": round(n / onnx["torch_median_seconds"], 1),
        "speed_vs_kner_torch": 1.0, "spans_equal_to_kner_torch": f"{n}/{n}"}
    rows[f"kner predict, onnxruntime (median of {reps})"] = {
        "texts": n, "sentences_per_s": round(n / onnx["onnx_median_seconds"], 1),
        "speed_vs_kner_torch": round(onnx["onnx_speedup"], 3),
        "spans_equal_to_kner_torch": f"{n - onnx['texts_with_different_spans']}/{n}"}
    return rows


def main(argv: list[str] | None = None) -> None:
    import kner
    from kner.data import load_split

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("--data", required=True, help="KLUE NER folder; the dev texts are used")
    parser.add_argument("--limit", type=int, default=1000, help="dev sentences to time")
    parser.add_argument("--num-threads", type=int, default=0, help="torch CPU threads (0 = default)")
    parser.add_argument("--precision", help="override the run's inference precision (fp32, bf16, fp16 on GPU)")
    args = parser.parse_args(argv)
    tagger = kner.load(args.run_dir, **({"precision": args.precision} if args.precision else {}))
    if not isinstance(tagger, BertTagger):
        raise SystemExit(f"{args.run_dir} holds a {tagger.family} model; this compares bert models only")
    if args.num_threads:
        import torch

        torch.set_num_threads(args.num_threads)
    texts = [ex.text for ex in load_split("dev", args.data, args.limit)]
    print(json.dumps(compare_with_pipeline(tagger, texts), ensure_ascii=False, indent=1))


if __name__ == "__main__":
    main()
