"""Reading KLUE NER: the release's TSV files or the Hugging Face copy, as :class:`Example` s."""
from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from collections.abc import Iterable, Sequence
from pathlib import Path

from .align import bio_to_spans
from .types import Example

ENV_VAR = "KNER_DATA"
SPLITS = ("train", "dev")
VALID_FRACTION = 0.05
SELECT_ON = ("validation", "dev")
VALID_RULE = ("a training sentence is held out for validation when the first 8 bytes of "
              "sha1('kner-valid:' + its text), read as a fraction of 2**64, fall below {fraction}; "
              "texts that also occur in dev stay in train; a set too small for any to fall below "
              "holds out its text of smallest key")
HOW_TO_POINT = (
    "Point kner at KLUE NER with --data DIR (a folder holding the release's *train*.tsv and "
    f"*dev*.tsv, e.g. ../shared/data/klue-ner-v1.1), or set {ENV_VAR}=DIR, or install 'datasets' "
    "with network access so that load_dataset('klue', 'ner') can fetch the hub copy."
)


class DataError(ValueError):
    """Data that cannot be read; the message names the file, the line and the fix."""


def read_klue_tsv(path: str | os.PathLike) -> list[Example]:
    """Parse one KLUE release file. The ``CHAR\\tTAG`` lines are the truth; ``##`` lines
    (header and per-sentence markup, sometimes malformed) are used only for the sentence id."""
    path = Path(path)
    examples: list[Example] = []
    chars: list[str] = []
    tags: list[str] = []
    sent_id = ""

    def flush() -> None:
        nonlocal chars, tags, sent_id
        if chars:
            examples.append(Example("".join(chars), tuple(bio_to_spans(tags)), sent_id))
        chars, tags, sent_id = [], [], ""

    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\n").rstrip("\r")
            if line.startswith("##"):
                head = line[2:].strip().split("\t", 1)[0]
                if head.startswith("klue-ner"):
                    flush()
                    sent_id = head
                continue
            if not line:
                flush()
                continue
            char, sep, tag = line.rpartition("\t")
            if not sep or len(char) != 1 or not _valid_tag(tag):
                raise DataError(
                    f"{path}:{lineno}: expected one character, a tab and a BIO tag such as 'B-PS', got {line!r}"
                )
            chars.append(char)
            tags.append(tag)
    flush()
    return examples


def _valid_tag(tag: str) -> bool:
    return tag == "O" or (len(tag) > 2 and tag[0] in "BI" and tag[1] == "-")


def find_split_file(directory: Path, split: str) -> Path:
    matches = sorted(p for p in directory.glob(f"*{split}*.tsv") if "provenance" not in p.name)
    if len(matches) != 1:
        found = ", ".join(p.name for p in directory.glob("*.tsv")) or "no .tsv files"
        raise DataError(f"{directory}: expected exactly one *{split}*.tsv file, found {found}. {HOW_TO_POINT}")
    return matches[0]


def from_hf_dataset(dataset: Iterable[dict], label_names: list[str]) -> list[Example]:
    """Examples from a Hugging Face KLUE NER split: ``tokens`` are characters (syllables and
    spaces) and ``ner_tags`` are ClassLabel ids whose names are ``label_names``."""
    out = []
    for row in dataset:
        tags = [label_names[i] for i in row["ner_tags"]]
        out.append(Example("".join(row["tokens"]), tuple(bio_to_spans(tags)), str(row.get("guid", ""))))
    return out


def load_hub(split: str) -> list[Example]:
    from datasets import load_dataset  # heavy and optional: imported only for the hub path

    hf_split = {"dev": "validation"}.get(split, split)
    ds = load_dataset("klue", "ner", split=hf_split)
    return from_hf_dataset(ds, ds.features["ner_tags"].feature.names)


def resolve_data_dir(data: str | os.PathLike | None) -> Path | None:
    """``--data`` if given, else ``$KNER_DATA``, else ``None`` (meaning: the hub)."""
    chosen = data or os.environ.get(ENV_VAR)
    if not chosen:
        return None
    directory = Path(chosen).expanduser()
    if not directory.is_dir():
        origin = "--data" if data else f"${ENV_VAR}"
        raise DataError(f"{origin} points at {directory}, which is not a directory. {HOW_TO_POINT}")
    return directory


def load_split(split: str, data: str | os.PathLike | None = None, limit: int | None = None) -> list[Example]:
    """The ``train`` or ``dev`` split from ``data`` (see :func:`resolve_data_dir`), first
    ``limit`` sentences if given."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    directory = resolve_data_dir(data)
    if directory is not None:
        examples = read_klue_tsv(find_split_file(directory, split))
    else:
        try:
            examples = load_hub(split)
        except Exception as exc:  # no network, no datasets package, hub down: say how to fix
            raise DataError(f"no --data or ${ENV_VAR} given, and the hub copy failed ({exc}). {HOW_TO_POINT}") from exc
    return examples[:limit] if limit else examples


def _valid_key(text: str) -> float:
    digest = hashlib.sha1(f"kner-valid:{text}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_validation(train: Sequence[Example], fraction: float = VALID_FRACTION,
                     exclude: Sequence[Example] = ()) -> tuple[list[Example], list[Example]]:
    """``(rest, valid)``: a deterministic part of ``train`` held out for model selection.

    The rule depends on each sentence's text only (see ``VALID_RULE``; a set too small to
    hold any sentence out by it gives up its sentence of smallest key), so the same sentence is
    held out whatever subset or order of train is given, repeated texts fall on the same side
    and nothing is held out that ``exclude`` (dev) contains: validation never repeats a dev
    sentence or a sentence trained on.
    """
    if not 0 < fraction < 1:
        raise ValueError(f"the validation fraction must lie strictly between 0 and 1, got {fraction}")
    barred = {ex.text for ex in exclude}
    keys = [_valid_key(ex.text) if ex.text not in barred else 2.0 for ex in train]  # 2.0: never held out
    held = [key < fraction for key in keys]
    if not any(held) and min(keys, default=2.0) < 2.0:  # too few sentences for the rule to pick one
        held = [key == min(keys) for key in keys]
    valid = [ex for ex, h in zip(train, held) if h]
    rest = [ex for ex, h in zip(train, held) if not h]
    if not valid or not rest:
        raise ValueError(f"holding out {fraction:.0%} of {len(train)} training sentences leaves "
                         f"{len(rest)} to train on and {len(valid)} to validate on; give more training data")
    return rest, valid


@dataclass
class Splits:
    """What a training run reads: sentences to train on, held-out sentences that choose the epoch
    (and any tuned setting), and dev, read only to report; ``selection`` says how they were made."""

    train: list[Example]
    valid: list[Example]
    dev: list[Example]
    selection: dict
    n_train_available: int
    n_dev_available: int


def prepare_splits(data: str | os.PathLike | None, train_limit: int | None = None, dev_limit: int | None = None,
                   select_on: str = "validation", valid_fraction: float = VALID_FRACTION,
                   hold_out: bool = True, chooses: bool = True) -> Splits:
    """Train, validation and dev for a training run. ``select_on="validation"`` (the default) holds
    a validation split out of the first ``train_limit`` training sentences; ``"dev"`` chooses on the
    dev sentences the model is reported on, which overstates its accuracy and is labelled so.
    ``hold_out=False`` is for families that choose nothing after training: they train on it all.
    ``chooses=False`` with ``hold_out`` holds the same validation split out of such a family all the
    same, so that an ensemble can choose its weights on sentences the run never saw."""
    if select_on not in SELECT_ON:
        raise ValueError(f"select_on must be one of {', '.join(SELECT_ON)}, got {select_on!r}")
    train_all, dev_all = load_split("train", data), load_split("dev", data)
    train, dev = train_all[:train_limit] if train_limit else train_all, dev_all[:dev_limit] if dev_limit else dev_all
    available = len(train_all), len(dev_all)
    if not hold_out:
        note = f"nothing chosen on held-out data (fixed settings): trained on all {len(train):,} training sentences"
        return Splits(train, [], dev, {"on": "nothing", "dev_used_for_selection": False, "n_valid": 0,
                                       "n_train": len(train), "note": note}, *available)
    if select_on == "dev" and chooses:
        note = (f"selected on the {len(dev):,} dev sentences it is scored on (asked for by name): "
                "its dev figures are optimistic")
        return Splits(train, dev, dev, {"on": "dev", "dev_used_for_selection": True, "n_valid": len(dev),
                                        "n_train": len(train), "note": note}, *available)
    rest, valid = split_validation(train, valid_fraction, exclude=dev_all)
    if chooses:
        on, note = "validation", f"selected on {len(valid):,} validation sentences held out of train; dev not used for selection"
    else:
        on, note = "nothing", (f"nothing chosen on held-out data (fixed settings); {len(valid):,} validation sentences "
                               "held out of train all the same, for ensembles")
    return Splits(rest, valid, dev, {"on": on, "dev_used_for_selection": False, "n_valid": len(valid),
                                     "n_train": len(rest), "valid_fraction": valid_fraction,
                                     "rule": VALID_RULE.format(fraction=valid_fraction), "note": note}, *available)


def held_out_fraction(selection: dict) -> float:
    """The validation fraction a run held out of train, read from its saved ``selection``
    (``kner.json``'s provenance); ``ValueError`` for a run that trained on those sentences."""
    if selection.get("on") == "dev" or not selection.get("n_valid") or selection.get("trained_on_validation"):
        raise ValueError("this run trained on the validation sentences (it held nothing out of train, or was "
                         "refit on them), so its validation figures would be flattering; evaluate it on dev, or "
                         "retrain it without --select-on dev or --refit (crf: with --hold-out)")
    if "valid_fraction" in selection:
        return float(selection["valid_fraction"])
    found = re.search(r"fall below ([0-9.eE+-]+)", selection.get("rule", ""))  # runs saved before valid_fraction
    if not found:
        raise ValueError("this run does not record which sentences it held out for validation; evaluate it on dev")
    return float(found.group(1))


def load_validation(data: str | os.PathLike | None, fraction: float = VALID_FRACTION,
                    limit: int | None = None) -> list[Example]:
    """The validation split held out of all of train by ``fraction``. A run that held out that
    fraction of fewer training sentences trained on none of these: the rule reads each text alone."""
    _, valid = split_validation(load_split("train", data), fraction, exclude=load_split("dev", data))
    return valid[:limit] if limit else valid
