"""Feature and setting ablations, chosen on validation: each variant of a family trains on train
minus the validation split and is scored on validation (to choose) and on dev (to report), with its
batched prediction speed on dev measured in the same process, one variant after another.

    python scripts/ablate.py crf --variant base --variant gaz:gazetteer=true \\
        --variant fast:kiwi=false,gazetteer=true --data ../shared/data/klue-ner-v1.1 --out ablation.jsonl

Each variant appends one JSON line to --out; docs/experiments.md records what was measured.
"""
from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from pathlib import Path

from kner import data as kdata
from kner import models
from kner.cli import _parse_sets
from kner.scoring import score


def variant(family: str, text: str) -> tuple[str, dict]:
    """``NAME:FIELD=VALUE,...`` -> (NAME, typed overrides), checked against the family's config."""
    name, _, settings = text.partition(":")
    return name, _parse_sets([f"{family}.{item}" for item in settings.split(",") if item]).get(family, {})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("family", choices=models.names())
    parser.add_argument("--variant", action="append", required=True, metavar="NAME[:FIELD=VALUE,...]")
    parser.add_argument("--data", help="KLUE NER release folder (else $KNER_DATA, else the hub)")
    parser.add_argument("--out", required=True, help="JSON lines file to append to")
    parser.add_argument("--train-limit", type=int)
    parser.add_argument("--repeats", type=int, default=3, help="timed passes over dev; the median is reported")
    parser.add_argument("--save", metavar="DIR", help="also save each variant's model to DIR/NAME (for an ensemble)")
    args = parser.parse_args()
    # One line per epoch (loss, validation F1, seconds) on stderr, as `kner train` writes it.
    logging.basicConfig(format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("kner").setLevel(logging.INFO)
    splits = kdata.prepare_splits(args.data, args.train_limit)
    texts = [ex.text for ex in splits.dev]
    for name, overrides in (variant(args.family, v) for v in args.variant):
        tagger = models.get(args.family)(**overrides)
        start = time.perf_counter()
        tagger.fit(splits.train, splits.valid)
        train_seconds = time.perf_counter() - start
        valid = score(splits.valid, tagger.predict([ex.text for ex in splits.valid]), official=False)
        timings, predicted = [], None
        for _ in range(args.repeats):
            start = time.perf_counter()
            predicted = tagger.predict(texts)
            timings.append(time.perf_counter() - start)
        dev = score(splits.dev, predicted, official=False)
        row = {"family": args.family, "variant": name, "overrides": overrides, "n_train": len(splits.train),
               "valid_f1": round(valid.f1, 4), "dev_f1": round(dev.f1, 4),
               "dev_per_type": {k: round(v.f1, 4) for k, v in dev.per_type.items()},
               "train_seconds": round(train_seconds, 1), "sentences_per_s": round(len(texts) / statistics.median(timings), 1)}
        print(json.dumps(row, ensure_ascii=False), flush=True)
        with open(args.out, "a", encoding="utf-8") as f:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
        if args.save:
            tagger.provenance = {"selection": splits.selection, "recipe": None}  # lets an ensemble check it
            scores = dev.to_dict()  # the KLUE macro F1s are not computed here (official=False)
            tagger.save(Path(args.save) / name, metrics={**{k: scores[k] for k in ("f1", "precision", "recall", "per_type")},
                                                         "n_train": len(splits.train), "n_valid": len(splits.valid),
                                                         "n_dev": len(splits.dev)})


if __name__ == "__main__":
    sys.exit(main())
