"""The training-data gazetteer: leave-one-out counts, the ratio rule, bits, persistence."""
from __future__ import annotations

from kner.models.gazetteer import Gazetteer
from kner.types import Example, Span

LABELS = ["PS", "LC", "OG"]


def _ex(text, *spans):
    return Example(text, [Span(s, e, lb) for s, e, lb in spans])


TRAIN = [
    _ex("서울에서 만났다", (0, 2, "LC")),
    _ex("서울은 크다", (0, 2, "LC")),
    _ex("서울대 학생", (0, 3, "OG")),  # 서울 occurs here untagged
    _ex("김철수 씨", (0, 3, "PS")),  # tagged only here
    _ex("삼성 주가", (0, 2, "OG")),
    _ex("삼성동 거리", (0, 3, "LC")),
    _ex("삼성 앞", ),  # 삼성 seen untagged
]


def _bits_of(gaz, label, text):
    """(B, I, E) flags per character for one label."""
    k = 3 * LABELS.index(label)
    return [tuple(b >> (k + j) & 1 for j in range(3)) for b in gaz.bits(text)]


def test_a_string_tagged_in_other_sentences_marks_begin_inside_end():
    gaz = Gazetteer.build(TRAIN, LABELS, min_ratio=0.5)
    assert _bits_of(gaz, "PS", "나는 김철수다") == [(0, 0, 0)] * 3 + [(1, 0, 0), (0, 1, 0), (0, 0, 1), (0, 0, 0)]
    assert _bits_of(gaz, "LC", "부산과 서울") == [(0, 0, 0)] * 4 + [(1, 0, 0), (0, 0, 1)]
    assert not any(map(any, _bits_of(gaz, "OG", "부산과 서울")))  # 서울 was never an OG; 서울대 is not in the text


def test_a_training_sentence_does_not_see_its_own_annotation():
    gaz = Gazetteer.build(TRAIN, LABELS, min_ratio=0.5)
    assert gaz.bits(TRAIN[3].text, TRAIN[3]) == [0] * len(TRAIN[3].text)  # 김철수 is tagged nowhere else
    # 서울 is LC in the other LC sentence (1 of the 2 other sentences containing it: ratio 0.5)
    assert _bits_of(gaz, "LC", TRAIN[0].text)[:2] == [(1, 0, 0), (0, 0, 1)]
    with_own = gaz.bits(TRAIN[3].text)
    assert with_own[0] and with_own[2]


def test_strings_rarely_tagged_where_they_occur_are_left_out():
    # 삼성 is an OG in 1 of the 3 sentences containing it (삼성동 counts as containing it)
    assert not any(map(any, _bits_of(Gazetteer.build(TRAIN, LABELS, min_ratio=0.5), "OG", "삼성 제품")))
    assert any(map(any, _bits_of(Gazetteer.build(TRAIN, LABELS, min_ratio=0.3), "OG", "삼성 제품")))


def test_every_character_gets_bits_and_persistence_keeps_them():
    gaz = Gazetteer.build(TRAIN, LABELS, min_ratio=0.5)
    again = Gazetteer.from_json(gaz.to_json())
    for text in ["", "서울", "😀서울漢김철수", "서울대 서울"]:
        assert len(gaz.bits(text)) == len(text)
        assert again.bits(text) == gaz.bits(text)
