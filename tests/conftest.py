"""Shared fixtures and helpers: KLUE data (never copied into the repo), tiny sentences, an interrupted run."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from kner.data import load_split
from kner.types import Example, Span

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def klue_dir() -> Path:
    """The KLUE NER release: $KNER_DATA, else ../shared/data/klue-ner-v1.1 beside the repo. Tests
    that need it are skipped where neither exists, and fail where $KNER_DATA names a missing folder
    (CI sets it, so there a lost data folder is an error, never a quiet skip)."""
    given = os.environ.get("KNER_DATA")
    directory = Path(given or REPO.parent / "shared/data/klue-ner-v1.1")
    if not directory.is_dir():
        if given:
            pytest.fail(f"KNER_DATA={given} is not a folder; point it at the KLUE NER release")
        pytest.skip(f"needs the KLUE NER release: set KNER_DATA (not found at {directory})")
    return directory


@pytest.fixture(scope="session")
def klue_train_slice(klue_dir) -> list[Example]:
    """The first 2,000 training sentences: enough to train tiny tokenizers and smoke-train models."""
    return load_split("train", klue_dir, limit=2000)


@pytest.fixture(scope="session")
def klue_text_slice(klue_train_slice) -> list[str]:
    """Raw KLUE text for training tiny tokenizers offline."""
    return [ex.text for ex in klue_train_slice]


def _ex(text: str, *entities: tuple[str, str]) -> Example:
    """Build an example from (surface, label) pairs, found left to right in ``text``."""
    spans, pos = [], 0
    for surface, label in entities:
        start = text.index(surface, pos)
        spans.append(Span(start, start + len(surface), label))
        pos = start + len(surface)
    return Example(text, tuple(spans))


OVERFIT = [
    _ex("이순신 장군은 조선 시대의 명장이다.", ("이순신", "PS"), ("조선 시대", "DT")),
    _ex("서울시청은 오후 3시에 회의를 연다.", ("서울시청", "OG"), ("오후 3시", "TI")),
    _ex("부산에서 사과 5개를 샀다.", ("부산", "LC"), ("5개", "QT")),
    _ex("김철수는 2019년 삼성전자에 입사했다.", ("김철수", "PS"), ("2019년", "DT"), ("삼성전자", "OG")),
    _ex("오늘 날씨가 참 좋다."),
]


@pytest.fixture
def overfit_examples() -> list[Example]:
    """A handful of sentences every model family must learn to reproduce exactly."""
    return list(OVERFIT)


# Texts that must come back answered, with spans that index them exactly.
ODD_TEXTS = [
    "",
    "   ",
    "😀 이순신 <장군:PS> 은 a:b > c",
    "漢字 テスト ABC 123 5㎞",
    "\x00\x07제어\t문자\n줄바꿈",
    "가나다 " * 300,  # 1,200 characters: longer than a BERT window
]


def interrupt_in_epoch(monkeypatch, epoch: int) -> None:
    """Stop training (as Ctrl-C would) when ``epoch`` ends, before its checkpoint is written."""
    from kner.models.selection import EpochSelector

    end_epoch = EpochSelector.end_epoch

    def interrupted(self, at, *args, **kwargs):
        if at == epoch:
            raise KeyboardInterrupt
        return end_epoch(self, at, *args, **kwargs)

    monkeypatch.setattr(EpochSelector, "end_epoch", interrupted)
