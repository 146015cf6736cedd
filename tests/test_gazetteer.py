"""The proper-noun gazetteer: longest match at word starts, Kiwi's dictionaries, saved with the CRF."""
from __future__ import annotations

from kner import gazetteer
from kner.gazetteer import Gazetteer

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


def test_the_table_survives_save_and_load(tmp_path):
    Gazetteer(TABLE).save(tmp_path)
    assert (tmp_path / gazetteer.FILE).is_file() and Gazetteer.load(tmp_path).table == TABLE


def test_kiwis_dictionaries_give_classed_names_and_pool_the_rare_classes():
    table = gazetteer.from_kiwi(min_class=1000)
    assert len(table) > 300_000
    assert table["더글러스 애덤스"] == "Q5"  # multi.dict: a human, by Wikidata class
    assert table["더글라스 애덤스"] == "Q5"  # a variant spelling keeps the class of its canonical form
    assert "Q" in table.values() and all(len(name) >= 2 for name in table)
    pooled = gazetteer.from_kiwi(min_class=10**9)
    assert set(pooled.values()) == {"Q", "NNP"}
