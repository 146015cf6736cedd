"""Error analysis of predicted spans against gold: what each model gets wrong, and where.

Pure functions on :class:`~kner.types.Example` s and predicted :class:`~kner.types.Span` lists
(no files, no models), used by the benchmark report (:mod:`kner.analysis_report`):

- :func:`match_spans` sorts every gold and every predicted entity of a sentence into one of
  ``KINDS`` (MUC / SemEval-2013 style), one-to-one, so the counts add up;
- :func:`taxonomy`, :func:`confusion` and :func:`error_examples` summarise those matches;
- :func:`agreement` compares models entity by entity (who finds what the others miss, the
  "any model" oracle, sentences no model gets right);
- :func:`slices` scores sentence-length, entity-length and source slices with the one scorer;
- :func:`learning_curves` collects the train-size runs of a benchmark.

Not ``nervaluate``: its counts are per prediction, so a gold entity overlapped by two predictions
is counted twice and ``possible`` exceeds the gold entities (MantisAI/nervaluate#25, #40), and each
of its schemas folds the overlap cases into one "partial"/"incorrect"; the report needs the six
kinds at once with both totals exact.
"""
from __future__ import annotations

import itertools
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .scoring import score
from .types import LABELS, Example, Span

KINDS = ("correct", "wrong_type", "wrong_boundary", "wrong_both", "missed", "spurious")
ERRORS = KINDS[1:]
PAIRED = KINDS[:4]  # kinds that pair one gold with one predicted entity
SENTENCE_BOUNDS = (30, 50, 80)  # characters; about the quartiles of KLUE dev (34, 52, 76)
ENTITY_BOUNDS = (1, 2, 3, 5, 9)  # characters; KLUE dev entities: median 3, 90th percentile 7


@dataclass(frozen=True)
class Match:
    """One outcome: a gold entity, a predicted one, or a pair of them (``None`` for the absent side)."""

    kind: str
    gold: Span | None = None
    pred: Span | None = None


def _overlap(a: Span, b: Span) -> int:
    return min(a.end, b.end) - max(a.start, b.start)


def match_spans(gold: Sequence[Span], pred: Sequence[Span]) -> list[Match]:
    """Pair the gold and predicted entities of one sentence, each entity used at most once.

    1. Same extent and type: ``correct``.
    2. Same extent, other type: ``wrong_type``.
    3. The remaining overlapping pairs, taken greedily: pairs of the same type first (so a
       boundary error of the right type is never reported as a type error too), then larger
       character overlap, then leftmost; a pair is taken only if neither entity is paired yet.
       Same type: ``wrong_boundary``; other type: ``wrong_both``.
    4. Gold entities left unpaired are ``missed`` (also when their only overlapping prediction
       was paired with another gold entity); predictions left unpaired are ``spurious``.

    Every gold entity lands in exactly one of correct, wrong_type, wrong_boundary, wrong_both,
    missed and every prediction in exactly one of the four paired kinds or spurious, so those
    five counts sum to the gold entities and to the predicted entities respectively.
    """
    gold_left, pred_left = set(gold), set(pred)
    matches = [Match("correct", s, s) for s in sorted(gold_left & pred_left)]
    gold_left -= pred_left
    pred_left -= set(gold)
    by_extent = {(p.start, p.end): p for p in pred_left}
    for g in sorted(gold_left):
        p = by_extent.get((g.start, g.end))
        if p is not None and p in pred_left:
            matches.append(Match("wrong_type", g, p))
            gold_left.discard(g)
            pred_left.discard(p)
    overlapping = [(g, p) for g in gold_left for p in pred_left if _overlap(g, p) > 0]
    overlapping.sort(key=lambda gp: (gp[0].label != gp[1].label, -_overlap(*gp), gp[0], gp[1]))
    for g, p in overlapping:
        if g in gold_left and p in pred_left:
            matches.append(Match("wrong_boundary" if g.label == p.label else "wrong_both", g, p))
            gold_left.discard(g)
            pred_left.discard(p)
    return (matches + [Match("missed", g, None) for g in sorted(gold_left)]
            + [Match("spurious", None, p) for p in sorted(pred_left)])


def match_all(gold: Sequence[Example], predicted: Sequence[Sequence[Span]]) -> list[list[Match]]:
    """:func:`match_spans` for every sentence."""
    if len(gold) != len(predicted):
        raise ValueError(f"{len(predicted)} predictions for {len(gold)} gold sentences")
    return [match_spans(ex.spans, p) for ex, p in zip(gold, predicted)]


def taxonomy(matches: Sequence[Sequence[Match]], labels: Sequence[str] = LABELS) -> dict:
    """Counts of each kind per entity type and in total, with ``n_gold`` and ``n_pred``.

    A type's row counts its gold entities by what happened to them, and ``spurious`` by the
    predicted type (a spurious entity has no gold one), so per type the first five kinds sum to
    that type's gold entities; in total the identities of :func:`match_spans` hold."""
    by_type = {t: Counter() for t in labels}
    for m in itertools.chain.from_iterable(matches):
        label = m.pred.label if m.kind == "spurious" else m.gold.label
        by_type.setdefault(label, Counter())[m.kind] += 1
    rows = {t: {k: c[k] for k in KINDS} for t, c in by_type.items()}
    total = {k: sum(r[k] for r in rows.values()) for k in KINDS}
    return {"by_type": rows, "total": total, "n_gold": sum(total[k] for k in (*PAIRED, "missed")),
            "n_pred": sum(total[k] for k in (*PAIRED, "spurious"))}


def confusion(matches: Sequence[Sequence[Match]], labels: Sequence[str] = LABELS) -> dict[str, dict[str, int]]:
    """``[gold type][predicted type]``: paired entities that overlap with different types (the
    wrong_type and wrong_both pairs of :func:`match_spans`; the diagonal stays 0)."""
    counts = Counter((m.gold.label, m.pred.label) for m in itertools.chain.from_iterable(matches)
                     if m.kind in ("wrong_type", "wrong_both"))
    names = list(dict.fromkeys([*labels, *itertools.chain.from_iterable(counts)]))
    return {g: {p: counts[g, p] for p in names} for g in names}


def _span(s: Span | None, text: str) -> list | None:
    return None if s is None else [s.start, s.end, s.label, text[s.start:s.end]]


def error_examples(gold: Sequence[Example], matches: Sequence[Sequence[Match]], per_kind: int = 3) -> dict[str, list]:
    """Up to ``per_kind`` real cases of each error kind, spread evenly over the sentences: the
    sentence id and text, and the gold and predicted span as ``[start, end, label, surface]``."""
    found = defaultdict(list)
    for ex, ms in zip(gold, matches):
        for m in ms:
            found[m.kind].append({"id": ex.id, "text": ex.text, "gold": _span(m.gold, ex.text),
                                  "pred": _span(m.pred, ex.text)})
    return {k: found[k][:: max(1, len(found[k]) // per_kind)][:per_kind] for k in ERRORS}


def agreement(gold: Sequence[Example], predictions: dict[str, Sequence[Sequence[Span]]], examples: int = 5) -> dict:
    """How the models' exact finds overlap: ``only[a][b]`` gold entities ``a`` finds and ``b``
    misses; ``found`` per model, ``any_model`` (the oracle: found by at least one) and
    ``every_model``; and the sentences whose gold spans no model reproduces exactly, with a few
    of them and every model's prediction."""
    found = {name: {(i, s) for i, (ex, p) in enumerate(zip(gold, preds)) for s in set(ex.spans) & set(p)}
             for name, preds in predictions.items()}
    wrong = [i for i, ex in enumerate(gold) if all(set(p[i]) != set(ex.spans) for p in predictions.values())]
    sets = list(found.values())
    return {
        "n_sentences": len(gold), "n_gold": sum(len(ex.spans) for ex in gold),
        "found": {name: len(f) for name, f in found.items()},
        "only": {a: {b: len(found[a] - found[b]) for b in found if b != a} for a in found},
        "any_model": len(set().union(*sets)), "every_model": len(set.intersection(*sets)) if sets else 0,
        "all_wrong": len(wrong),
        "all_wrong_examples": [{"id": gold[i].id, "text": gold[i].text,
                                "gold": [_span(s, gold[i].text) for s in gold[i].spans],
                                "predicted": {name: [_span(s, gold[i].text) for s in sorted(p[i])]
                                              for name, p in predictions.items()}}
                               for i in wrong[:: max(1, len(wrong) // examples)][:examples]],
    }


def bucket(n: int, bounds: Sequence[int]) -> str:
    """The name of ``n``'s bucket among upper bounds ``bounds``: ``"≤30"``, ``"31–50"``, ``"3"``, ``"81+"``."""
    low = 1
    for high in bounds:
        if n <= high:
            return str(high) if low == high else (f"≤{high}" if low == 1 else f"{low}–{high}")
        low = high + 1
    return f"{low}+"


def bucket_names(bounds: Sequence[int]) -> list[str]:
    """Every bucket :func:`bucket` can name for ``bounds``, in order."""
    return [bucket(n, bounds) for n in (1, *(b + 1 for b in bounds))]


def source(example_id: str) -> str:
    """The corpus a KLUE sentence comes from, the id's last ``-`` part (``wikitree``, ``nsmc``)."""
    return example_id.rsplit("-", 1)[-1] if "-" in example_id else "unknown"


def _f1(gold: Sequence[Example], predicted: Sequence[Sequence[Span]]) -> dict:
    s = score(gold, predicted, official=False)
    return {"f1": s.f1, "precision": s.precision, "recall": s.recall, "n_gold": s.n_gold, "n_pred": s.n_pred,
            "n_sentences": s.n_sentences}


def _by_sentence(gold, predicted, key: Callable[[Example], str], order: Sequence[str] = ()) -> dict[str, dict]:
    groups = defaultdict(list)
    for i, ex in enumerate(gold):
        groups[key(ex)].append(i)
    names = [k for k in order if k in groups] + sorted(set(groups) - set(order))
    return {k: _f1([gold[i] for i in groups[k]], [predicted[i] for i in groups[k]]) for k in names}


def slices(gold: Sequence[Example], predicted: Sequence[Sequence[Span]]) -> dict[str, dict[str, dict]]:
    """Micro P/R/F1 (:func:`kner.scoring.score`) by sentence length, by entity length (gold and
    predicted entities of that many characters, so a boundary error can move a prediction into
    another bucket) and by source."""
    entity = {}
    for name in bucket_names(ENTITY_BOUNDS):
        keep = [[s for s in spans if bucket(s.end - s.start, ENTITY_BOUNDS) == name] for spans in predicted]
        part = [Example(ex.text, tuple(s for s in ex.spans if bucket(s.end - s.start, ENTITY_BOUNDS) == name), ex.id)
                for ex in gold]
        entity[name] = _f1(part, keep)
    return {"sentence_length": _by_sentence(gold, predicted, lambda ex: bucket(len(ex.text), SENTENCE_BOUNDS),
                                            bucket_names(SENTENCE_BOUNDS)),
            "entity_length": entity, "source": _by_sentence(gold, predicted, lambda ex: source(ex.id))}


def learning_curves(models: Sequence[dict]) -> dict[str, list[dict]]:
    """Per family with train-size runs: one point per run, the train-size runs and the family's
    full run (its first seed), sorted by training sentences."""
    ok = [m for m in models if "error" not in m and m.get("n_train") is not None]
    curves = {}
    for family in dict.fromkeys(m["family"] for m in ok if m.get("train_size")):
        runs = [m for m in ok if m["family"] == family and (m.get("train_size") or m.get("name", family) == family)]
        curves[family] = sorted(({"name": m.get("name", family), "train_size": m.get("train_size"),
                                  "n_train": m["n_train"], "f1": m["f1"],
                                  "train_seconds": m["speed"]["train_seconds"]} for m in runs),
                                key=lambda p: p["n_train"])
    return curves


__all__ = ["ERRORS", "KINDS", "Match", "agreement", "bucket", "bucket_names", "confusion", "error_examples", "learning_curves",
           "match_all", "match_spans", "slices", "source", "taxonomy"]
