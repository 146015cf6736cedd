"""Kiwi's dictionaries as tables: the proper-noun gazetteer (longest match at word starts) and the
morpheme lexicon (longest match inside runs of letters and digits), saved with the models."""
from __future__ import annotations

import pytest

from kner import gazetteer
from kner.gazetteer import Gazetteer, Lexicon

TABLE = {"이순신": "Q5", "이순신 장군": "Q", "조선": "NNP", "서울": "NNP", "서울역": "Q55488"}


def spans(text: str, tags: list[str]) -> list[tuple[str, str]]:
    out = []
    for i, tag in enumerate(tags):
        if tag.startswith("B-"):
            j = i + 1
            while j < len(tags) and tags[j] == "I-" + tag[2:]:
                j += 1
            out.append((text[i:j], tag[2:]))
    return out


def test_the_longest_name_starting_a_word_wins_and_particles_after_it_stay_outside():
    g = Gazetteer(TABLE)
    text = "이순신 장군은 서울역에서 조선을 말했다"
    tags = g.tags(text)
    assert len(tags) == len(text)
    assert spans(text, tags) == [("이순신 장군", "Q"), ("서울역", "Q55488"), ("조선", "NNP")]
    assert tags[text.index("은")] == "O" and tags[text.index("에서")] == "O"


def test_a_name_inside_a_word_is_not_matched_but_one_after_punctuation_is():
    g = Gazetteer(TABLE)
    assert spans("남서울", g.tags("남서울")) == []
    assert spans("(서울)", g.tags("(서울)")) == [("서울", "NNP")]
    assert g.tags("") == [] and g.tags("서") == ["O"]


@pytest.mark.parametrize("kind", [Gazetteer, Lexicon])
def test_the_table_survives_save_and_load(tmp_path, kind):
    kind(TABLE).save(tmp_path)
    assert (tmp_path / kind.file).is_file() and kind.load(tmp_path).table == TABLE


LEXICON = {"이순신": "NNP", "이": "J|NNG|NR", "순": "NNG", "은": "E|J|NNG", "장군": "NNG", "서울": "NNP",
           "3": "S"}


def test_the_lexicon_matches_the_longest_form_inside_each_run_and_marks_what_it_cannot_cover():
    text = "이순신은 장군이다, 서울3"
    tags = Lexicon(LEXICON).tags(text)
    assert len(tags) == len(text)
    assert spans(text, tags) == [("이순신", "NNP"), ("은", "E|J|NNG"), ("장군", "NNG"), ("이", "J|NNG|NR"),
                                 ("서울", "NNP"), ("3", "S")]
    assert tags[text.index("다")] == "U"  # a letter no form covers
    assert [tags[i] for i, c in enumerate(text) if not c.isalnum()] == ["O", "O", "O"]
    assert Lexicon(LEXICON).tags("") == []


def test_a_form_is_matched_only_inside_one_run_of_letters_and_digits():
    lexicon = Lexicon({"3": "SN", "5": "SN", "3.5": "SN", "서울 역": "NNP", "서울": "NNP"})
    assert spans("3.5 서울 역", lexicon.tags("3.5 서울 역")) == [("3", "SN"), ("5", "SN"), ("서울", "NNP")]


def test_kiwis_lexicon_gives_each_form_the_sorted_tag_families_it_can_take():
    table = gazetteer.lexicon_from_kiwi()
    assert len(table) > 200_000 and all(" " not in form for form in table)
    assert table["에서"] == "J"  # particles pool into one family
    assert "NNG" in table["장군"].split("|") and table["장군"] == "|".join(sorted(table["장군"].split("|")))
    assert set("|".join(table.values()).split("|")) >= {"NNP", "NNG", "J", "E", "V", "M"}
    assert gazetteer.tag_family("VV-R") == "V" and gazetteer.tag_family("JKS") == "J"


def test_kiwis_dictionaries_give_classed_names_and_pool_the_rare_classes():
    table = gazetteer.from_kiwi(min_class=1000)
    assert len(table) > 300_000
    assert table["더글러스 애덤스"] == "Q5"  # multi.dict: a human, by Wikidata class
    assert table["더글라스 애덤스"] == "Q5"  # a variant spelling keeps the class of its canonical form
    assert "Q" in table.values() and all(len(name) >= 2 for name in table)
    pooled = gazetteer.from_kiwi(min_class=10**9)
    assert set(pooled.values()) == {"Q", "NNP"}
