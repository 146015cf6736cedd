"""The one scorer: hand-computed cases and a differential check against seqeval / scikit-learn."""
import random

import pytest
from seqeval.metrics import f1_score as seqeval_f1
from seqeval.scheme import IOB2
from sklearn.metrics import f1_score as sklearn_f1

from kner.align import bio_labels, spans_to_bio
from kner.scoring import score
from kner.types import LABELS, Example, Span

GOLD = [
    Example("이순신 장군은 조선 시대의 명장이다.", (Span(0, 3, "PS"), Span(8, 13, "DT"))),
    Example("부산에서 사과 5개를 샀다.", (Span(0, 2, "LC"), Span(8, 10, "QT"))),
]


def test_perfect_prediction_scores_one():
    s = score(GOLD, [list(ex.spans) for ex in GOLD])
    assert (s.precision, s.recall, s.f1) == (1.0, 1.0, 1.0)
    assert s.klue_entity_macro_f1 == 1.0 and s.klue_char_macro_f1 == 1.0


def test_hand_computed_micro_and_per_type():
    # 4 gold; predicted: PS exact, DT one character short (wrong), LC exact, QT labelled DT (wrong)
    pred = [[Span(0, 3, "PS"), Span(8, 12, "DT")], [Span(0, 2, "LC"), Span(8, 10, "DT")]]
    s = score(GOLD, pred)
    assert s.precision == pytest.approx(2 / 4) and s.recall == pytest.approx(2 / 4) and s.f1 == pytest.approx(0.5)
    assert s.per_type["PS"].f1 == 1.0 and s.per_type["DT"].precision == 0.0 and s.per_type["DT"].support == 1
    assert s.per_type["QT"].recall == 0.0 and s.per_type["QT"].support == 1
    assert (s.n_gold, s.n_pred, s.n_sentences) == (4, 4, 2)


def test_no_prediction_scores_zero_not_error():
    s = score(GOLD, [[], []])
    assert s.f1 == 0.0 and s.precision == 0.0


def test_length_mismatch_is_an_error():
    with pytest.raises(ValueError, match="predictions"):
        score(GOLD, [[]])


def _random_example(rng: random.Random) -> Example:
    text = "".join(rng.choice("가나다라 마바사") for _ in range(rng.randint(5, 25)))
    spans, pos = [], 0
    while pos < len(text) - 1:
        start = rng.randint(pos, len(text) - 1)
        end = rng.randint(start + 1, min(len(text), start + 4))
        spans.append(Span(start, end, rng.choice(LABELS)))
        pos = end + rng.randint(0, 3)
    return Example(text, tuple(spans))


def test_klue_metrics_equal_seqeval_and_sklearn_on_the_same_character_tags(klue_train_slice):
    rng = random.Random(0)
    gold = klue_train_slice[:300] + [_random_example(rng) for _ in range(200)]
    # Perturb gold into plausible predictions: drop, shift, relabel.
    pred = []
    for ex in gold:
        spans = []
        for s in ex.spans:
            r = rng.random()
            if r < 0.15:
                continue
            if r < 0.3 and s.end - s.start > 1:
                s = Span(s.start, s.end - 1, s.label)
            elif r < 0.4:
                s = Span(s.start, s.end, rng.choice(LABELS))
            spans.append(s)
        pred.append(spans)
    result = score(gold, pred)

    true_tags, pred_tags = [], []
    for ex, p in zip(gold, pred):
        t, q = spans_to_bio(ex.text, ex.spans), spans_to_bio(ex.text, p)
        true_tags.append([x for x, ch in zip(t, ex.text) if ch != " "])
        pred_tags.append([x for x, ch in zip(q, ex.text) if ch != " "])
    flat_t = [x for seq in true_tags for x in seq]
    flat_p = [x for seq in pred_tags for x in seq]
    assert result.klue_entity_macro_f1 == pytest.approx(
        seqeval_f1([flat_t], [flat_p], average="macro", mode="strict", scheme=IOB2))
    assert result.klue_char_macro_f1 == pytest.approx(
        sklearn_f1(flat_t, flat_p, labels=bio_labels(), average="macro", zero_division=1))
    # the headline micro F1 equals seqeval's strict micro F1 on per-sentence tags
    full_t = [spans_to_bio(ex.text, ex.spans) for ex in gold]
    full_p = [spans_to_bio(ex.text, p) for ex, p in zip(gold, pred)]
    assert result.f1 == pytest.approx(seqeval_f1(full_t, full_p, mode="strict", scheme=IOB2))
