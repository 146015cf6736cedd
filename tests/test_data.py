"""Loading KLUE NER from the release TSV files and from the Hugging Face copy."""
import pytest

from kner import data
from kner.align import bio_labels
from kner.types import Span

TSV = """## 토큰, 레이블 구분자 : \\t
## klue-ner-v1_dev_00000-x\t<경찰:OG>은 <또 (malformed markup
경\tB-OG
찰\tI-OG
은\tO
 \tO
또\tO

## klue-ner-v1_dev_00001-y\t<3:QT>개
3\tB-QT
개\tO
"""


def test_reads_character_lines_and_survives_malformed_markup(tmp_path):
    path = tmp_path / "x_dev.tsv"
    path.write_text(TSV, encoding="utf-8")
    examples = data.read_klue_tsv(path)
    assert [ex.text for ex in examples] == ["경찰은 또", "3개"]
    assert examples[0].spans == (Span(0, 2, "OG"),) and examples[0].id == "klue-ner-v1_dev_00000-x"
    assert examples[1].spans == (Span(0, 1, "QT"),)


def test_malformed_tsv_line_names_file_and_line(tmp_path):
    path = tmp_path / "bad_train.tsv"
    path.write_text("가\tO\n나다\tB-PS\n", encoding="utf-8")
    with pytest.raises(data.DataError, match=r"bad_train.tsv:2"):
        data.read_klue_tsv(path)


def test_missing_directory_says_how_to_point_kner_at_data(tmp_path, monkeypatch):
    monkeypatch.delenv(data.ENV_VAR, raising=False)
    with pytest.raises(data.DataError, match="KNER_DATA"):
        data.load_split("dev", tmp_path / "nope")


def test_directory_without_split_file_is_explained(tmp_path):
    with pytest.raises(data.DataError, match=r"\*dev\*.tsv"):
        data.load_split("dev", tmp_path)


def test_environment_variable_is_used_when_no_flag(klue_dir, monkeypatch):
    monkeypatch.setenv(data.ENV_VAR, str(klue_dir))
    assert len(data.load_split("dev", None, limit=3)) == 3


def test_no_source_at_all_fails_with_instructions(monkeypatch):
    monkeypatch.delenv(data.ENV_VAR, raising=False)

    def offline(split):
        raise ConnectionError("hub unreachable")

    monkeypatch.setattr(data, "load_hub", offline)
    with pytest.raises(data.DataError, match="--data DIR"):
        data.load_split("train")


def test_release_files_load_completely(klue_dir):
    dev = data.load_split("dev", klue_dir)
    assert len(dev) == 5000
    assert sum(len(ex.spans) for ex in dev) == 14257
    assert dev[0].text.startswith("경찰은 또 성매매")


def _hub_like_dataset(datasets):
    # The hub's KLUE NER v1 label order: B-DT I-DT B-LC … I-TI O
    names = ["B-DT", "I-DT", "B-LC", "I-LC", "B-OG", "I-OG", "B-PS", "I-PS", "B-QT", "I-QT", "B-TI", "I-TI", "O"]
    assert sorted(names) == sorted(bio_labels())
    features = datasets.Features({
        "sentence": datasets.Value("string"),
        "tokens": datasets.Sequence(datasets.Value("string")),
        "ner_tags": datasets.Sequence(datasets.ClassLabel(names=names)),
    })
    ds = datasets.Dataset.from_dict({
        "sentence": ["<이순신:PS> 장군"],
        "tokens": [list("이순신 장군")],
        "ner_tags": [[6, 7, 7, 12, 12, 12]],
    }, features=features)
    return ds


def test_hugging_face_copy_reads_tokens_and_class_label_names():
    datasets = pytest.importorskip("datasets")
    ds = _hub_like_dataset(datasets)
    examples = data.from_hf_dataset(ds, ds.features["ner_tags"].feature.names)
    assert examples[0].text == "이순신 장군" and examples[0].spans == (Span(0, 3, "PS"),)


def test_hub_is_the_fallback_and_dev_means_validation(monkeypatch):
    datasets = pytest.importorskip("datasets")
    monkeypatch.delenv(data.ENV_VAR, raising=False)
    calls = []

    def fake_load_dataset(name, config, split):
        calls.append((name, config, split))
        return _hub_like_dataset(datasets)

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    examples = data.load_split("dev")
    assert calls == [("klue", "ner", "validation")]
    assert examples[0].spans == (Span(0, 3, "PS"),)
