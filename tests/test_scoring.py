"""The one scorer: hand-computed cases, and the KLUE metrics against figures from KLUE's own code."""
import pytest

from kner.scoring import score
from kner.types import Example, Span

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


# Three sentences with one of each kind of error: a span one character short (DT, OG), a wrong
# label (QT read as DT) and an extra entity (PS).
KLUE_GOLD = GOLD + [Example("오후 3시에 삼성전자 회의", (Span(0, 4, "TI"), Span(7, 11, "OG")))]
KLUE_PRED = [[Span(0, 3, "PS"), Span(8, 12, "DT")], [Span(0, 2, "LC"), Span(8, 10, "DT")],
             [Span(0, 4, "TI"), Span(7, 10, "OG"), Span(12, 14, "PS")]]
# Computed once, offline, by the KLUE baseline's own functions klue_ner_entity_macro_f1 and
# klue_ner_char_macro_f1 (KLUE-benchmark/KLUE-baseline, klue_baseline/metrics/functional.py at
# 443c38b) on these sentences' character tags with spaces removed and the sentences concatenated,
# as its NER evaluation does; they return percentages.
KLUE_BASELINE_ENTITY_MACRO_F1 = 44.44444444444444
KLUE_BASELINE_CHAR_MACRO_F1 = 73.11355311355311


def test_klue_metrics_match_the_klue_baselines_own_figures():
    s = score(KLUE_GOLD, KLUE_PRED)
    assert s.klue_entity_macro_f1 == pytest.approx(KLUE_BASELINE_ENTITY_MACRO_F1 / 100)
    assert s.klue_char_macro_f1 == pytest.approx(KLUE_BASELINE_CHAR_MACRO_F1 / 100)
    assert s.f1 == pytest.approx(6 / 13)  # micro: 3 exact of 6 gold and 7 predicted (P 3/7, R 3/6)
