"""The one scorer: predicted character spans against the original gold spans.

Every model's output is scored here, after it has been turned into spans over the original
text, so a model whose tokenizer cannot express a boundary is charged for it.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from .align import bio_labels, spans_to_bio
from .types import LABELS, Example, Span


@dataclass
class TypeScore:
    precision: float
    recall: float
    f1: float
    support: int


@dataclass
class Scores:
    """Entity-level strict micro P/R/F1 (the headline ``f1``), per-type scores, and KLUE's two
    official metrics (all fractions in 0–1)."""

    precision: float
    recall: float
    f1: float
    klue_entity_macro_f1: float
    klue_char_macro_f1: float
    per_type: dict[str, TypeScore] = field(default_factory=dict)
    n_sentences: int = 0
    n_gold: int = 0
    n_pred: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def prf(tp: int, n_pred: int, n_gold: int) -> tuple[float, float, float]:
    """Precision, recall and F1 from counts of exact matches, predictions and gold spans."""
    p = tp / n_pred if n_pred else 0.0
    r = tp / n_gold if n_gold else 0.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def score(gold: Sequence[Example], predicted: Sequence[Sequence[Span]], labels: Sequence[str] = LABELS, *,
          official: bool = True) -> Scores:
    """Score ``predicted[i]`` (spans over ``gold[i].text``) against ``gold[i].spans``.

    ``official=False`` leaves KLUE's two metrics out (NaN): they take tens of seconds over dev,
    too slow for the error analysis, which scores a dozen slices per model on micro F1 alone."""
    if len(gold) != len(predicted):
        raise ValueError(f"{len(predicted)} predictions for {len(gold)} gold sentences")
    tp, n_pred, n_gold = Counter(), Counter(), Counter()
    for ex, pred in zip(gold, predicted):
        g, p = set(ex.spans), set(pred)
        for s in g & p:
            tp[s.label] += 1
        for s in p:
            n_pred[s.label] += 1
        for s in g:
            n_gold[s.label] += 1
    precision, recall, f1 = prf(sum(tp.values()), sum(n_pred.values()), sum(n_gold.values()))
    per_type = {t: TypeScore(*prf(tp[t], n_pred[t], n_gold[t]), n_gold[t]) for t in labels}
    entity_macro, char_macro = klue_official_scores(gold, predicted, labels) if official else (float("nan"),) * 2
    return Scores(precision, recall, f1, entity_macro, char_macro, per_type,
                  len(gold), sum(n_gold.values()), sum(n_pred.values()))


def klue_official_scores(gold: Sequence[Example], predicted: Sequence[Sequence[Span]],
                         labels: Sequence[str] = LABELS) -> tuple[float, float]:
    """KLUE's entity macro F1 and character macro F1, computed as the KLUE baseline does:
    character tags with spaces removed, all sentences flattened into one sequence; seqeval
    strict IOB2 macro over entity types, and scikit-learn macro F1 over all BIO labels."""
    from seqeval.metrics import f1_score as seqeval_f1
    from seqeval.scheme import IOB2
    from sklearn.metrics import f1_score as sklearn_f1

    true_tags, pred_tags = [], []
    for ex, pred in zip(gold, predicted):
        keep = [i for i, ch in enumerate(ex.text) if not ch.isspace()]
        t, p = spans_to_bio(ex.text, ex.spans), spans_to_bio(ex.text, pred)
        true_tags += [t[i] for i in keep]
        pred_tags += [p[i] for i in keep]
    if not true_tags:
        return 0.0, 0.0
    entity_macro = seqeval_f1([true_tags], [pred_tags], average="macro", mode="strict", scheme=IOB2)
    inventory = bio_labels(labels)
    char_macro = sklearn_f1(true_tags, pred_tags, labels=inventory, average="macro", zero_division=1)
    return float(entity_macro), float(char_macro)
