"""Does the ensemble's weight search overfit the validation split? Each way of choosing weights
chooses on one random half of validation and is scored on the other half; dev is never read.

    python scripts/ensemble_halves.py RUN RUN ... --data ../shared/data/klue-ner-v1.1 --rounds 3

RUNs are candidate model directories held out of validation (as for `kner train ensemble`).
Each round halves validation at random (seeded by the round) and scores both directions;
docs/experiments.md records what was measured.
"""
from __future__ import annotations

import argparse
import random
import statistics
from collections.abc import Callable, Sequence

from kner import load
from kner.data import load_split, split_validation
from kner.models.ensemble import EnsembleConfig, VoteScorer, choose, thresholds
from kner.scoring import score
from kner.types import Example, Span

Predictions = Sequence[Sequence[Sequence[Span]]]  # per member, per sentence
THRESHOLD_STEPS = EnsembleConfig().threshold_steps


def equal_weights(gold: Sequence[Example], by_member: Predictions) -> tuple[list[float], float]:
    """Every member at weight 1; only the threshold is chosen, as ``choose`` would."""
    scorer, weights = VoteScorer(gold, by_member), [1.0] * len(by_member)
    return weights, max(thresholds(THRESHOLD_STEPS), key=lambda t: scorer.f1(weights, t))  # max keeps the first of ties


METHODS: dict[str, Callable[[Sequence[Example], Predictions], tuple[list[float], float]]] = {
    "search, prune (kner default)": lambda g, b: choose(g, b, THRESHOLD_STEPS, prune=True)[:2],
    "search, no prune": lambda g, b: choose(g, b, THRESHOLD_STEPS, prune=False)[:2],
    "equal weights, threshold chosen": equal_weights,
    "equal weights, majority 0.5": lambda g, b: ([1.0] * len(b), 0.5),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="candidate model directories")
    parser.add_argument("--data", default=None, help="KLUE NER folder (default: the Hugging Face hub)")
    parser.add_argument("--rounds", type=int, default=3, help="random halvings of validation")
    args = parser.parse_args()

    gold = split_validation(load_split("train", args.data), exclude=load_split("dev", args.data))[1]
    texts = [ex.text for ex in gold]
    preds = [load(run).predict(texts) for run in args.runs]  # each member runs once; halves index into it
    results: dict[str, list[float]] = {name: [] for name in [*METHODS, "best single member"]}
    for r in range(args.rounds):
        order = list(range(len(gold)))
        random.Random(r).shuffle(order)
        halves = sorted(order[: len(order) // 2]), sorted(order[len(order) // 2:])
        for choose_on, score_on in (halves, halves[::-1]):
            gold_a, gold_b = [gold[i] for i in choose_on], [gold[i] for i in score_on]
            by_a = [[p[i] for i in choose_on] for p in preds]
            by_b = [[p[i] for i in score_on] for p in preds]
            for name, method in METHODS.items():
                weights, threshold = method(gold_a, by_a)
                results[name].append(VoteScorer(gold_b, by_b).f1(weights, threshold))
                print(f"round {r}, {name}: weights {weights}, threshold {threshold}: held-out F1 "
                      f"{results[name][-1]:.4f}", flush=True)
            best = max(range(len(preds)), key=lambda k: score(gold_a, by_a[k]).f1)
            results["best single member"].append(score(gold_b, by_b[best]).f1)
    print(f"\nheld-out micro F1 over {2 * args.rounds} half-splits of {len(gold):,} validation sentences")
    for name, f1s in results.items():
        print(f"{name:34s} mean {statistics.fmean(f1s):.4f}  min {min(f1s):.4f}  max {max(f1s):.4f}")


if __name__ == "__main__":
    main()
