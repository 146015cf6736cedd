"""Conversions between spans, BIO tags, markup and subword offsets."""
import pytest

from kner.align import (
    MarkupError, best_valid_iob2, bio_labels, bio_to_spans, chars_from_token_tags, eojeol_positions, morpheme_ids, morpheme_tags,
    owner_window, parse_markup, piece_offsets, piece_words, spans_to_bio, split_pieces, to_markup, token_tags_from_chars, trim_offsets,
    windows,
)
from kner.types import Example, Span


def test_spans_and_bio_round_trip():
    text = "이순신 장군은 조선 시대의 명장이다."
    spans = [Span(0, 3, "PS"), Span(8, 13, "DT")]
    tags = spans_to_bio(text, spans)
    assert tags[:4] == ["B-PS", "I-PS", "I-PS", "O"]
    assert tags[8:14] == ["B-DT", "I-DT", "I-DT", "I-DT", "I-DT", "O"]
    assert bio_to_spans(tags) == spans


def test_inside_tag_without_begin_is_no_entity_under_strict_iob2():
    assert bio_to_spans(["O", "I-PS", "I-PS", "O"]) == []
    assert bio_to_spans(["B-PS", "I-LC", "O"]) == [Span(0, 1, "PS")]
    assert bio_to_spans(["B-PS", "B-PS", "I-PS"]) == [Span(0, 1, "PS"), Span(1, 3, "PS")]
    assert bio_to_spans(["I-QT", "B-QT"]) == [Span(1, 2, "QT")]


def test_entity_at_end_of_text_is_closed():
    assert bio_to_spans(["O", "B-QT", "I-QT"]) == [Span(1, 3, "QT")]


def test_markup_matches_klue_style_and_round_trips():
    text = "이순신 장군은 조선 시대의 명장이다."
    spans = [Span(0, 3, "PS"), Span(8, 13, "DT")]
    markup = to_markup(text, spans)
    assert markup == "<이순신:PS> 장군은 <조선 시대:DT>의 명장이다."
    assert parse_markup(markup) == (text, spans)


@pytest.mark.parametrize("text,spans", [
    ("a<b>c:d \\ <x:PS>", [Span(0, 1, "OG")]),
    ("시간 10:30 <오후:TI>", [Span(3, 8, "TI")]),
    ("<<<>>>", []),
    ("a:b", [Span(0, 3, "PS")]),
])
def test_markup_escapes_brackets_so_any_text_round_trips(text, spans):
    assert parse_markup(to_markup(text, spans)) == (text, spans)


def test_markup_errors_say_where():
    with pytest.raises(MarkupError, match="never closed"):
        parse_markup("<이순신:PS 장군")
    with pytest.raises(MarkupError, match="LABEL"):
        parse_markup("<이순신:XX> 장군")
    with pytest.raises(MarkupError, match="unexpected"):
        parse_markup("장군>")


def test_bio_inventory_starts_with_outside():
    labels = bio_labels()
    assert labels[0] == "O" and len(labels) == 13 and "I-TI" in labels


def test_subword_offsets_with_leading_space_are_trimmed():
    text = "이순신 장군"
    # SentencePiece-style offsets where "▁장" reports the space before it
    offsets = [(0, 0), (0, 1), (1, 3), (3, 5), (5, 6), (0, 0)]
    assert trim_offsets(text, offsets) == [(0, 0), (0, 1), (1, 3), (4, 5), (5, 6), (0, 0)]


def test_token_labels_come_from_first_character_and_return_to_characters():
    text = "이순신 장군"
    char_tags = spans_to_bio(text, [Span(0, 3, "PS")])
    offsets = [(0, 0), (0, 1), (1, 3), (4, 5), (5, 6), (0, 0)]
    token_tags = token_tags_from_chars(char_tags, offsets)
    assert token_tags == [None, "B-PS", "I-PS", "O", "O", None]
    assert chars_from_token_tags(len(text), token_tags, offsets) == char_tags


def test_boundary_inside_a_subword_cannot_be_expressed():
    # gold entity is "서울" but the token covers "서울시"
    char_tags = spans_to_bio("서울시", [Span(0, 2, "LC")])
    tags = token_tags_from_chars(char_tags, [(0, 3)])
    assert bio_to_spans(chars_from_token_tags(3, tags, [(0, 3)])) == [Span(0, 3, "LC")]


def test_windows_cover_everything_with_overlap():
    wins = windows(10, 4, 2)
    assert wins == [(0, 4), (2, 6), (4, 8), (6, 10)]
    owners = owner_window(wins)
    assert len(owners) == 10 and all(wins[w][0] <= i < wins[w][1] for i, w in enumerate(owners))
    assert windows(3, 4, 2) == [(0, 3)]
    with pytest.raises(ValueError):
        windows(10, 2, 2)


def test_morpheme_tags_cover_each_character_a_morpheme_covers():
    from types import SimpleNamespace as M

    # Kiwi splits "갔다" into 가/VV + 았/EP (both over "갔", the later wins) + 다/EF; the space is in no morpheme.
    tokens = [M(tag="VV", start=0, len=1), M(tag="EP", start=0, len=1), M(tag="EF", start=1, len=1),
              M(tag="NNP", start=3, len=2)]
    assert morpheme_tags("갔다 서울", tokens) == ["B-EP", "B-EF", "_", "B-NNP", "I-NNP"]


def test_morpheme_ids_give_each_character_the_first_morpheme_covering_it():
    from types import SimpleNamespace as M

    # 갔 is 가/VV + 았/EP: the content morpheme (the first) names it; the space gets -1.
    tokens = [M(id=7, start=0, len=1), M(id=8, start=0, len=1), M(id=9, start=1, len=1), M(id=4, start=3, len=2)]
    assert morpheme_ids("갔다 서울", tokens) == [7, 9, -1, 4, 4]


def test_pieces_cover_every_non_space_character_once_cut_at_the_given_positions():
    text = " 서울에서  이순신이\t왔다 "
    # cuts at 에(3), 이(10), a space (5: nothing to cut) and a word start (7: already a piece start)
    pieces = split_pieces(text, {3, 5, 7, 10})
    assert [text[s:e] for s, e in pieces] == ["서울", "에서", "이순신", "이", "왔다"]
    assert split_pieces(text) == [(1, 5), (7, 11), (12, 14)]
    assert split_pieces("  ") == [] and split_pieces("가", {0, 1}) == [(0, 1)]


def test_offsets_within_pieces_become_offsets_within_the_text():
    text = " 서울에서  이순신"
    pieces = [(1, 3), (3, 5), (7, 10)]
    words = piece_words(text, pieces)
    assert words == [" 서울", "에서", " 이순신"]  # a space only where a word starts
    # subwords "▁서울" | "에" "서" | "▁" "이순신", offsets within each word
    word_ids = [None, 0, 1, 1, 2, 2, None]
    offsets = [(0, 0), (0, 3), (0, 1), (1, 2), (0, 1), (1, 4), (0, 0)]
    assert piece_offsets(pieces, words, word_ids, offsets) == [(0, 0), (1, 3), (3, 4), (4, 5), (7, 7), (7, 10), (0, 0)]


def test_eojeol_positions():
    assert eojeol_positions("가 나다 라마바") == ["S", "_", "B", "E", "_", "B", "I", "E"]


def test_example_rejects_spans_outside_or_overlapping():
    with pytest.raises(ValueError, match="does not fit"):
        Example("abc", (Span(1, 5, "PS"),))
    with pytest.raises(ValueError, match="overlaps"):
        Example("abcdef", (Span(0, 3, "PS"), Span(2, 4, "LC")))


# --- best valid IOB2 path ----------------------------------------------------------------------

def _valid_iob2(seq):
    return all(not t.startswith("I-") or (i and seq[i - 1][2:] == t[2:] and seq[i - 1] != "O")
               for i, t in enumerate(seq))


@pytest.mark.parametrize("seed", range(20))
def test_best_valid_iob2_matches_brute_force_over_all_sequences(seed):
    import itertools

    import numpy as np

    tags = ["O", "B-PS", "I-PS", "B-LC", "I-LC"]
    rng = np.random.default_rng(seed)
    log_probs = rng.normal(size=(1 + seed % 4, len(tags)))
    best = max((seq for seq in itertools.product(tags, repeat=len(log_probs)) if _valid_iob2(seq)),
               key=lambda seq: sum(log_probs[i, tags.index(t)] for i, t in enumerate(seq)))
    assert best_valid_iob2(log_probs, tags) == list(best)


def test_best_valid_iob2_replaces_an_orphan_inside_tag_that_argmax_would_emit():
    import numpy as np

    tags = ["O", "B-PS", "I-PS"]
    log_probs = np.log([[0.9, 0.05, 0.05], [0.1, 0.3, 0.6], [0.2, 0.1, 0.7]])  # argmax: O I-PS I-PS
    assert best_valid_iob2(log_probs, tags) == ["O", "B-PS", "I-PS"]
    assert best_valid_iob2(np.zeros((0, 3)), tags) == []
