"""Mention replacement (Dai & Adel, 2020) as an ablation: scripts/ablate.py with the training split
augmented once, before training. Each training sentence with a PS/LC/OG entity gets, with
probability P, one copy in which each of those entities is replaced, with probability 0.5 (at
least one), by a different training mention of the same type. Validation and dev are untouched.

    python scripts/ablate_mention_replacement.py P SEED bilstm-crf --variant mr50:seed=13 --repeats 1 \\
        --data ../shared/data/klue-ner-v1.1 --out ablation.jsonl --save models
"""
import random
import sys
from pathlib import Path

from kner import data as kdata
from kner.types import Example, Span

sys.path.insert(0, str(Path(__file__).parent))
import ablate  # noqa: E402  (its main() reads the patched prepare_splits)

NAMES = ("PS", "LC", "OG")


def augment(train: list[Example], p: float, seed: int) -> list[Example]:
    rng = random.Random(seed)
    pool = {t: sorted({ex.text[s.start:s.end] for ex in train for s in ex.spans if s.label == t}) for t in NAMES}
    out = []
    for ex in train:
        names = [s for s in ex.spans if s.label in NAMES]
        if not names or rng.random() >= p:
            continue
        pick = [s for s in names if rng.random() < 0.5] or [rng.choice(names)]
        parts, spans, shift, pos = [], [], 0, 0
        for s in sorted(ex.spans, key=lambda s: s.start):
            old = new = ex.text[s.start:s.end]
            while s in pick and new == old:
                new = rng.choice(pool[s.label])
            parts += [ex.text[pos:s.start], new]
            spans.append(Span(s.start + shift, s.start + shift + len(new), s.label))
            shift, pos = shift + len(new) - len(old), s.end
        parts.append(ex.text[pos:])
        out.append(Example("".join(parts), tuple(spans), ex.id + "-mr"))
    return out


def main() -> None:
    p, seed = float(sys.argv[1]), int(sys.argv[2])
    prepare = kdata.prepare_splits

    def augmented(*args, **kwargs):
        splits = prepare(*args, **kwargs)
        extra = augment(splits.train, p, seed)
        print(f"mention replacement: {len(extra)} copies beside {len(splits.train)} sentences", file=sys.stderr)
        splits.train = list(splits.train) + extra
        return splits

    kdata.prepare_splits = augmented
    sys.argv = [sys.argv[0], *sys.argv[3:]]
    ablate.main()


if __name__ == "__main__":
    main()
