"""Streaming ``kner predict``: texts read, tagged and written one batch at a time.

Memory holds one batch however long the input is, and each batch's results are flushed before
the next batch is read, so an input that breaks off (an undecodable line, an interrupt) keeps
everything before it.
"""
from __future__ import annotations

import itertools
import json
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import BinaryIO, TextIO

from tqdm import tqdm

from .align import to_markup
from .types import Span

PROGRESS_DELAY_S = 2.0  # the bar appears only for inputs that take longer than this


class InputError(ValueError):
    """A line that cannot be read as text; the message gives its number."""


def read_lines(stream: BinaryIO, name: str = "input", progress: Callable[[int], object] = lambda n: None
               ) -> Iterator[str]:
    """Each line of ``stream`` decoded as UTF-8, without its ``\\n`` or ``\\r\\n`` ending; every
    other character (``\\r`` inside a line, form feeds, U+2028…) stays in the text. ``progress``
    is told the bytes of each line read. Raises :class:`InputError` at an undecodable line."""
    for number, raw in enumerate(stream, 1):
        progress(len(raw))
        line = raw[:-1] if raw.endswith(b"\n") else raw
        line = line[:-1] if line.endswith(b"\r") else line
        try:
            yield line.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InputError(f"line {number} of {name} is not valid UTF-8 (byte {raw[exc.start]:#04x} at byte "
                             f"{exc.start + 1}); the {number - 1} lines before it were tagged and written") from None


def render(text: str, spans: Sequence[Span], as_json: bool) -> str:
    """One output line: a JSON object with the text and its entities, or inline markup."""
    if as_json:
        return json.dumps({"text": text, "entities": [s.to_dict(text) for s in spans]}, ensure_ascii=False)
    return to_markup(text, spans)


def predict_stream(predict: Callable[[list[str]], list[list[Span]]], texts: Iterable[str], out: TextIO,
                   batch_size: int, as_json: bool) -> int:
    """Tag ``texts`` ``batch_size`` at a time and write one line per text to ``out`` in input order,
    flushing after each batch; returns how many were written. At an :class:`InputError` from
    ``texts``, the texts read before it are still tagged and written, then the error is raised."""
    if batch_size < 1:
        raise ValueError(f"batch size must be at least 1, not {batch_size}")
    written, batch = 0, []

    def flush() -> None:
        nonlocal written, batch
        if batch:
            for text, spans in zip(batch, predict(batch)):
                out.write(render(text, spans, as_json) + "\n")
            out.flush()
            written, batch = written + len(batch), []

    try:
        for text in texts:
            batch.append(text)
            if len(batch) == batch_size:
                flush()
    except InputError:
        flush()  # the lines before the bad one still come out
        raise
    flush()
    return written


def progress_bar(total_bytes: int | None) -> tqdm:
    """A bar on stderr counting input bytes (a percentage when the size is known), shown only
    once tagging has taken :data:`PROGRESS_DELAY_S`."""
    return tqdm(total=total_bytes, unit="B", unit_scale=True, desc="kner predict", delay=PROGRESS_DELAY_S,
                leave=False)


def predict_texts(predict: Callable[[list[str]], list[list[Span]]], texts: Sequence[str], input_path: str | None,
                  out: TextIO, batch_size: int, as_json: bool) -> int:
    """``texts``, then each line of the file ``input_path`` (``-``: standard input) if given, tagged
    into ``out`` by :func:`predict_stream`, with a progress bar on stderr for long files."""
    if input_path is None:
        return predict_stream(predict, texts, out, batch_size, as_json)
    stdin = input_path == "-"
    stream = sys.stdin.buffer if stdin else open(input_path, "rb")
    try:
        with progress_bar(None if stdin else os.fstat(stream.fileno()).st_size) as bar:
            lines = read_lines(stream, "standard input" if stdin else input_path, bar.update)
            return predict_stream(predict, itertools.chain(texts, lines), out, batch_size, as_json)
    finally:
        if not stdin:
            stream.close()
