"""Streaming predict: texts come back exactly, in batches, and a bad line stops with its number."""
import io
import json

import pytest

from kner.stream import InputError, predict_stream, predict_texts, read_lines, render
from kner.types import Span


class FakeTagger:
    """Tags every 서울 as LC and records the batches it was given."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []

    def predict(self, texts: list[str]) -> list[list[Span]]:
        self.batches.append(list(texts))
        return [[Span(i, i + 2, "LC")] if (i := t.find("서울")) >= 0 else [] for t in texts]


def test_lines_lose_only_their_endings():
    raw = "서울\r\n\n a\rb \x0c\u2028c\nlast".encode()
    assert list(read_lines(io.BytesIO(raw))) == ["서울", "", " a\rb \x0c\u2028c", "last"]


def test_an_undecodable_line_is_named_by_number():
    with pytest.raises(InputError, match=r"line 3 of in.txt is not valid UTF-8 \(byte 0xff at byte 2\)"):
        list(read_lines(io.BytesIO(b"a\nb\nc\xff\nd\n"), "in.txt"))


def test_batches_are_tagged_in_order_and_each_text_answered_once():
    tagger, out = FakeTagger(), io.StringIO()
    texts = ["서울에", "", "부산", "서울 서울", "x"]
    assert predict_stream(tagger.predict, texts, out, batch_size=2, as_json=False) == 5
    assert tagger.batches == [["서울에", ""], ["부산", "서울 서울"], ["x"]]
    assert out.getvalue() == "<서울:LC>에\n\n부산\n<서울:LC> 서울\nx\n"


def test_json_lines_carry_the_text_exactly():
    text = 'a "서울" \\ <b>'
    row = json.loads(render(text, [Span(3, 5, "LC")], as_json=True))
    assert row == {"text": text, "entities": [{"start": 3, "end": 5, "label": "LC", "text": "서울"}]}


def test_lines_before_a_bad_one_are_written_and_flushed(tmp_path):
    src = tmp_path / "in.txt"
    src.write_bytes("서울\n부산\n대구\n".encode() + b"\xff\n" + "광주\n".encode())
    tagger, out = FakeTagger(), io.StringIO()
    with pytest.raises(InputError, match="line 4"):
        predict_texts(tagger.predict, ["인자"], str(src), out, batch_size=3, as_json=False)
    assert out.getvalue() == "인자\n<서울:LC>\n부산\n대구\n"


def test_a_batch_size_below_one_is_refused():
    with pytest.raises(ValueError, match="batch size must be at least 1"):
        predict_stream(FakeTagger().predict, ["a"], io.StringIO(), batch_size=0, as_json=False)
