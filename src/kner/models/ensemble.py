"""An ensemble of saved runs of any families: weighted votes on spans or on their boundaries.

Each member tags the text; a span (start, end, type) gets the summed weight of the members that
found it, and spans with at least ``threshold`` of the total weight are kept, strongest first,
skipping any that overlaps a kept one. Boundary votes pool the types instead: (start, end) gets the
weight of every member that found it, and takes the type most of that weight gave, so a name the
members split between LC and OG is not lost to both. Weights, threshold and the kind of vote are
chosen on the validation split (a weight of 0 leaves a member out),
so the members must not have trained on it: a member chosen on dev, or trained on all of train
(the CRF unless trained with ``--hold-out``), is refused. The members are copied into the ensemble's folder.
"""
from __future__ import annotations

import itertools
import json
import logging
import shutil
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..scoring import prf, score
from ..types import Example, Span
from .base import Tagger, read_meta

log = logging.getLogger(__name__)
MEMBERS_DIR, VOTES_FILE = "members", "ensemble.json"
VOTES = ("auto", "span", "boundary")
WEIGHT_CHOICES = (1.0, 2.0, 0.5, 0.0)
"""Weights tried for each member, in the order that wins ties: equal weights first."""
EXHAUSTIVE_LIMIT = 20_000
"""Most weightings tried one by one (4^7 = 16,384: seven members with pruning); more use a local search."""
LARGEST_MOVE = 3
"""Most members whose weights the local search changes in one move, tried only when smaller moves
do not help: with two, adding a ninth member could end at a worse weighting than the eight's."""


@dataclass
class EnsembleConfig:
    members: str = ""
    """Comma-separated model directories (kner train or kner benchmark runs) to combine."""
    threshold_steps: int = 9
    """Thresholds tried on validation: k / (steps + 1) of the total weight, k = 1 … steps."""
    prune: bool = True
    """Let validation leave members out (weight 0); they are then neither run nor saved.
    Off keeps every member. Pruning tries 4^members weightings instead of 3^members."""
    vote: str = "auto"
    """span: members vote on (start, end, type); boundary: on (start, end), the type going to the
    most weight; auto: boundary only where it scores higher on validation."""


def vote(predictions: Sequence[Sequence[Span]], weights: Sequence[float], threshold: float,
         pool_types: bool = False) -> list[Span]:
    """The spans of one text that ``threshold`` of the total weight voted for, strongest (then
    longest) first, without overlaps; with ``pool_types`` the votes are on boundaries."""
    tallies = {key: _tally(types, weights) for key, types in _ballots(predictions, pool_types).items()}
    kept = _keep({key: weight for key, (weight, _) in tallies.items()}, _need(weights, threshold))
    return sorted(Span(key.start, key.end, tallies[key][1]) for key in kept)


def _ballots(predictions: Sequence[Sequence[Span]], pool_types: bool) -> dict[Span, tuple[str | None, ...]]:
    """Each candidate (a span, or with ``pool_types`` a boundary: a span with no type) and the type
    each member gave it (None: not found)."""
    ballots: dict[Span, list[str | None]] = {}
    for i, spans in enumerate(predictions):
        for span in spans:
            key = Span(span.start, span.end, "") if pool_types else span
            ballots.setdefault(key, [None] * len(predictions))[i] = span.label
    return {key: tuple(types) for key, types in ballots.items()}


def _tally(types: Sequence[str | None], weights: Sequence[float]) -> tuple[float, str]:
    """The weight of the members that found a candidate, and the type with the most of it (ties:
    the first member's). Summed in member order everywhere, so equal votes are equal floats."""
    total, first, mixed = 0.0, None, False
    for label, weight in zip(types, weights):
        if label is not None:
            total += weight
            mixed = mixed or (first is not None and label != first)
            first = first or label
    if not mixed:  # the weight search calls this millions of times; most candidates have one type
        return total, first
    by_type: dict[str, float] = {}
    for label, weight in zip(types, weights):
        if label is not None:
            by_type[label] = by_type.get(label, 0.0) + weight
    return total, max(by_type, key=by_type.__getitem__)


def _need(weights: Sequence[float], threshold: float) -> float:
    return threshold * sum(weights) - 1e-9


def _keep(votes: dict[Span, float], need: float) -> list[Span]:
    """The candidates whose vote reaches ``need``, strongest (then longest) first, skipping overlaps."""
    kept: list[Span] = []
    for span in sorted(votes, key=lambda s: (-votes[s], s.start - s.end, s)):
        if votes[span] >= need and all(span.end <= k.start or k.end <= span.start for k in kept):
            kept.append(span)
    return kept


class VoteScorer:
    """Micro F1 of :func:`vote` on gold texts for any weights and threshold, exactly, without
    re-voting every text. A candidate that overlaps no other is kept iff its vote reaches the
    threshold, so those are counted once per pattern of member types and gold type (a candidate is
    right iff the type it takes is the gold type of its boundary); only groups of overlapping
    candidates go through :func:`_keep` each time."""

    def __init__(self, gold: Sequence[Example], by_member: Sequence[Sequence[Sequence[Span]]],
                 pool_types: bool = False) -> None:
        self.n_gold = sum(len(set(ex.spans)) for ex in gold)
        self.singles: Counter[tuple[tuple[str | None, ...], str | None]] = Counter()  # (types, gold type) -> candidates
        self.groups: list[tuple[dict[Span, tuple[str | None, ...]], dict[tuple[int, int], str]]] = []
        for ex, predictions in zip(gold, zip(*by_member)):
            ballots = _ballots(predictions, pool_types)
            gold_type = {(s.start, s.end): s.label for s in ex.spans}
            group, end = [], -1
            for key in sorted(ballots, key=lambda s: (s.start, s.end)):
                if group and key.start >= end:
                    self._add(group, ballots, gold_type)
                    group = []
                group.append(key)
                end = max(end, key.end)
            if group:
                self._add(group, ballots, gold_type)

    def _add(self, group: list[Span], ballots: dict[Span, tuple[str | None, ...]],
             gold_type: dict[tuple[int, int], str]) -> None:
        if len(group) == 1:
            self.singles[ballots[group[0]], gold_type.get((group[0].start, group[0].end))] += 1
        else:
            self.groups.append(({key: ballots[key] for key in group}, gold_type))

    def f1(self, weights: Sequence[float], threshold: float) -> float:
        need, tp, n_pred = _need(weights, threshold), 0, 0
        for (types, gold), n in self.singles.items():
            votes, label = _tally(types, weights)
            if votes >= need:
                n_pred, tp = n_pred + n, tp + n * (label == gold)
        for ballots, gold_type in self.groups:
            tallies = {key: _tally(types, weights) for key, types in ballots.items()}
            kept = _keep({key: votes for key, (votes, _) in tallies.items()}, need)
            n_pred, tp = n_pred + len(kept), tp + sum(tallies[k][1] == gold_type.get((k.start, k.end)) for k in kept)
        return prf(tp, n_pred, self.n_gold)[2]


def thresholds(steps: int) -> list[float]:
    """k / (steps + 1) of the total weight, k = 1 … steps, nearest a majority first (the order that wins ties)."""
    return sorted((k / (steps + 1) for k in range(1, steps + 1)), key=lambda t: abs(t - 0.5))


def choose(gold: Sequence[Example], by_member: Sequence[Sequence[Sequence[Span]]],
           threshold_steps: int, prune: bool = False, pool_types: bool = False) -> tuple[list[float], float, float]:
    """The weights (from WEIGHT_CHOICES, 0 only if ``prune``) and threshold whose votes score the
    best micro F1 on ``gold``, given each member's predictions for it, and that F1. Ties go to the
    fewest members (the faster ensemble), then to the simplest weights. Up to EXHAUSTIVE_LIMIT
    weightings are all tried; past that, a local search from equal weights moves to any better
    weighting that changes one member's weight, else two members', else up to LARGEST_MOVE, until
    none is better."""
    tried = thresholds(threshold_steps)
    choices = WEIGHT_CHOICES if prune else [w for w in WEIGHT_CHOICES if w > 0]
    scorer, n = VoteScorer(gold, by_member, pool_types), len(by_member)
    best, best_t, best_key = [1.0] * n, 0.5, (-1.0, 0)

    def consider(weights: Sequence[float]) -> bool:
        nonlocal best, best_t, best_key
        better = False
        for threshold in tried if any(weights) else ():
            key = (scorer.f1(weights, threshold), -sum(w > 0 for w in weights))
            if key > best_key:
                best, best_t, best_key, better = list(weights), threshold, key, True
        return better

    if len(choices) ** n <= EXHAUSTIVE_LIMIT:
        for weights in sorted(itertools.product(choices, repeat=n), key=lambda w: sum(x > 0 for x in w)):
            consider(weights)
    else:
        improved = consider(best)
        while improved:  # the first better neighbour wins; larger moves only when no smaller one helps
            improved = any(any(map(consider, _neighbours(best, choices, k))) for k in range(1, LARGEST_MOVE + 1))
    return best, best_t, best_key[0]


def choose_vote(gold: Sequence[Example], by_member: Sequence[Sequence[Sequence[Span]]],
                config: EnsembleConfig) -> tuple[bool, list[float], float, float]:
    """:func:`choose` for each kind of vote ``config.vote`` allows: whether to vote on boundaries,
    the weights, the threshold and their F1 on ``gold``. Span votes win ties (the older rule)."""
    pools = {"auto": (False, True), "span": (False,), "boundary": (True,)}[config.vote]
    chosen = {pool: choose(gold, by_member, config.threshold_steps, config.prune, pool) for pool in pools}
    for pool, (weights, threshold, f1) in chosen.items():
        log.info("ensemble %s votes: weights %s, threshold %.1f: validation F1 %.4f on %d sentences",
                 "boundary" if pool else "span", weights, threshold, f1, len(gold))
    pool = max(chosen, key=lambda p: chosen[p][2])
    return (pool, *chosen[pool])


def _neighbours(weights: list[float], choices: Sequence[float], k: int):
    """The weightings that change exactly ``k`` members' weights of ``weights``."""
    for members in itertools.combinations(range(len(weights)), k):
        for new in itertools.product(*([w for w in choices if w != weights[i]] for i in members)):
            changed = list(weights)
            for i, w in zip(members, new):
                changed[i] = w
            yield changed


class EnsembleTagger(Tagger):
    """Saved runs of any families, combined by weighted votes chosen on validation."""

    family = "ensemble"
    Config = EnsembleConfig
    # how ensembles saved before pruning, and before boundary votes, ran
    former_defaults = {"prune": False, "vote": "span"}

    def __init__(self, config: EnsembleConfig | None = None, **overrides) -> None:
        super().__init__(config, **overrides)
        if self.config.vote not in VOTES:
            raise ValueError(f"vote must be one of {', '.join(VOTES)}, not {self.config.vote!r}")
        self.members: list[Tagger] = []
        self.member_metrics: list[dict] = []  # each member's own dev figures, kept in its copy
        self.weights: list[float] = []
        self.threshold = 0.5
        self.pool_types = False  # vote on boundaries (chosen on validation where config.vote is auto)
        self.left_out: list[str] = []  # member directories that validation gave weight 0
        self.valid_f1: float | None = None  # micro F1 of the chosen votes on the validation split
        self.candidates_valid_f1: dict[str, float] = {}  # each given member's own, left-out ones included

    def fit(self, train: Sequence[Example], valid: Sequence[Example] | None = None) -> "EnsembleTagger":
        """Loads the members (nothing is trained) and chooses weights and threshold on ``valid``,
        dropping the members it weighs 0: equal weights and a majority without it."""
        import time

        from . import load

        start = time.perf_counter()
        dirs = [d.strip() for d in self.config.members.split(",") if d.strip()]
        if len(dirs) < 2:
            raise ValueError("an ensemble needs at least two member model directories: --members DIR,DIR[,...]")
        metas = [read_meta(d) for d in dirs]
        for d, meta in zip(dirs, metas):
            _check_member(d, meta)
        self.members = [load(d) for d in dirs]
        self.member_metrics = [meta.get("metrics", {}) for meta in metas]
        self.weights, self.threshold = [1.0] * len(dirs), 0.5
        if valid:
            texts = [ex.text for ex in valid]
            by_member = [m.predict(texts) for m in self.members]
            self.candidates_valid_f1 = {d: score(valid, spans).f1 for d, spans in zip(dirs, by_member)}
            for d, f1 in self.candidates_valid_f1.items():
                log.info("ensemble member %s: validation F1 %.4f alone", d, f1)
            self.pool_types, self.weights, self.threshold, self.valid_f1 = choose_vote(valid, by_member, self.config)
            kept = [i for i, w in enumerate(self.weights) if w > 0]
            self.left_out = [dirs[i] for i in range(len(dirs)) if i not in kept]
            self.members, self.member_metrics, self.weights = ([seq[i] for i in kept] for seq in
                                                               (self.members, self.member_metrics, self.weights))
        self.train_seconds = time.perf_counter() - start
        return self

    def _predict(self, texts: list[str]) -> list[list[Span]]:
        if not self.members:
            raise RuntimeError("this ensemble has no members yet: call fit() or kner.load() first")
        by_member = [m.predict(texts) for m in self.members]
        return [vote(spans, self.weights, self.threshold, self.pool_types) for spans in zip(*by_member)]

    def _save(self, directory: Path) -> None:
        if not self.members:
            raise RuntimeError("cannot save an ensemble without members")
        names = [f"{i}-{member.family}" for i, member in enumerate(self.members)]
        shutil.rmtree(directory / MEMBERS_DIR, ignore_errors=True)  # an earlier save's members
        for name, member, metrics in zip(names, self.members, self.member_metrics):
            member.save(directory / MEMBERS_DIR / name, metrics=metrics)
        (directory / VOTES_FILE).write_text(json.dumps(
            {"members": names, "weights": self.weights, "threshold": self.threshold,
             "vote": "boundary" if self.pool_types else "span", "valid_f1": self.valid_f1,
             "left_out_on_validation": self.left_out, "candidates_valid_f1": self.candidates_valid_f1},
            indent=2), encoding="utf-8")

    @classmethod
    def _load(cls, directory: Path, config: EnsembleConfig) -> "EnsembleTagger":
        from . import load

        votes = json.loads((directory / VOTES_FILE).read_text(encoding="utf-8"))
        tagger = cls(config)
        tagger.members = [load(directory / MEMBERS_DIR / name) for name in votes["members"]]
        tagger.member_metrics = [read_meta(directory / MEMBERS_DIR / name).get("metrics", {}) for name in votes["members"]]
        tagger.weights, tagger.threshold = votes["weights"], votes["threshold"]
        tagger.pool_types = votes.get("vote", "span") == "boundary"  # saved before boundary votes: span
        tagger.left_out = votes.get("left_out_on_validation", [])
        tagger.valid_f1 = votes.get("valid_f1")
        tagger.candidates_valid_f1 = votes.get("candidates_valid_f1", {})
        return tagger


def _check_member(directory: str, meta: dict) -> None:
    """Refuse a member (its ``kner.json`` in ``meta``) whose training saw the sentences the ensemble
    chooses its weights on, or whose epoch was chosen on the dev set it is reported on."""
    selection = meta.get("provenance", {}).get("selection") or {}
    if selection.get("on") == "dev":
        raise ValueError(f"{directory} was selected on dev; an ensemble of it would be optimistic too. "
                         "Use members selected on validation (kner train's default)")
    if selection.get("trained_on_validation"):
        raise ValueError(f"{directory} was refit on train and validation, so weights chosen on validation "
                         "would favour it. Use the run trained without --refit")
    if selection.get("on") == "nothing" and not selection.get("n_valid"):
        raise ValueError(f"{directory} trained on all of train, validation included, so weights chosen on "
                         "validation would favour it. Use members that held validation out (kner train crf --hold-out)")
