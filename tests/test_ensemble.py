"""The ensemble family: span and boundary votes computed by hand, weights and the kind of vote
chosen on validation, members that saw the validation sentences refused, and `kner train ensemble`
end to end."""
from __future__ import annotations

import itertools
import json
import random

import pytest

import kner
from kner.benchmark import model_bytes
from kner.cli import main
from kner.models.crf import CRFTagger
from kner.models.ensemble import (WEIGHT_CHOICES, EnsembleConfig, EnsembleTagger, VoteScorer, _ballots, choose,
                                  choose_vote, vote)
from kner.scoring import score
from kner.types import Example, Span

PS, LC, OG = (lambda a, b: Span(a, b, "PS")), (lambda a, b: Span(a, b, "LC")), (lambda a, b: Span(a, b, "OG"))


def test_a_span_needs_the_threshold_share_of_the_weight():
    members = [[PS(0, 3), LC(5, 7)], [PS(0, 3)], [PS(0, 3), OG(5, 7)]]
    assert vote(members, [1, 1, 1], 0.5) == [PS(0, 3)]  # LC and OG have a third each
    assert vote(members, [1, 1, 1], 0.3) == [PS(0, 3), LC(5, 7)]  # a tie of LC and OG: the first by order wins
    assert vote(members, [1, 1, 2], 0.5) == [PS(0, 3), OG(5, 7)]  # OG now has half the weight
    assert vote(members, [1, 1, 1], 0.9) == [PS(0, 3)] and vote([[], []], [1, 1], 0.5) == []


def test_boundary_votes_pool_the_types_and_give_the_span_the_heaviest_type():
    members = [[PS(0, 3), LC(5, 7)], [PS(0, 3)], [PS(0, 3), OG(5, 7)]]
    assert vote(members, [1, 1, 1], 0.5, pool_types=True) == [PS(0, 3), LC(5, 7)]  # two thirds found (5, 7)
    assert vote(members, [1, 1, 2], 0.5, pool_types=True) == [PS(0, 3), OG(5, 7)]  # OG has more weight
    assert vote(members, [1, 1, 1], 0.7, pool_types=True) == [PS(0, 3)]
    assert vote([[LC(0, 2)], [OG(0, 2)], [OG(0, 2)], [LC(0, 3)]], [2, 1, 1, 1], 0.5, pool_types=True) == [LC(0, 2)]


def test_overlapping_candidates_keep_the_stronger_then_the_longer():
    assert vote([[OG(0, 4)], [OG(0, 4)], [LC(0, 2)]], [1, 1, 1], 0.3) == [OG(0, 4)]
    assert vote([[OG(0, 4)], [LC(0, 2), PS(2, 4)]], [1, 1], 0.5) == [OG(0, 4)]  # equal votes: the longer span
    assert vote([[OG(0, 4)], [LC(0, 2), PS(2, 4)]], [1, 2], 0.5) == [LC(0, 2), PS(2, 4)]


def test_weights_are_chosen_to_trust_the_member_that_is_right_on_validation():
    gold = [Example("이순신 장군", (PS(0, 3),)), Example("서울 시청", (LC(0, 2),)), Example("삼성 전자", (OG(0, 2),))]
    right = [list(ex.spans) for ex in gold]
    wrong = [[OG(0, 3)], [PS(0, 2)], [LC(0, 2)]]
    weights, threshold, f1 = choose(gold, [right, wrong, wrong], threshold_steps=9)
    assert [vote(s, weights, threshold) for s in zip(right, wrong, wrong)] == right and f1 == 1.0
    assert weights[0] > weights[1] and weights[0] > weights[2]
    assert choose(gold, [right, right], 9) == ([1.0, 1.0], 0.5, 1.0)  # ties go to the simplest setting


def _random_votes(rng: random.Random, n_texts: int, n_members: int):
    """Gold texts with three spans that do not overlap, and members that each find two of them and
    three random spans that may overlap anything."""
    random_spans = lambda step: {Span(a, a + rng.randint(1, 4), rng.choice("PS LC OG".split()))
                                 for a in rng.sample(range(0, 12, step), 3)}  # step 4: no overlaps
    gold = [Example("가" * 16, tuple(sorted(random_spans(4)))) for _ in range(n_texts)]
    return gold, [[sorted(set(rng.sample(sorted(ex.spans), 2)) | random_spans(1)) for ex in gold] for _ in range(n_members)]


@pytest.mark.parametrize("pool_types", [False, True])
def test_the_fast_vote_scorer_equals_voting_every_text_and_scoring_it(pool_types):
    rng = random.Random(0)
    gold, by_member = _random_votes(rng, 60, 4)
    scorer = VoteScorer(gold, by_member, pool_types)
    assert scorer.groups and scorer.singles  # both paths are exercised
    split = [types for p in zip(*by_member) for types in _ballots(p, True).values() if len(set(types) - {None}) > 1]
    assert len(split) > 20  # members often disagree on a boundary's type, the case boundary votes settle
    for _ in range(200):
        weights, threshold = [rng.choice(WEIGHT_CHOICES) for _ in range(4)], rng.randint(1, 9) / 10
        if any(weights):
            voted = [vote(s, weights, threshold, pool_types) for s in zip(*by_member)]
            assert scorer.f1(weights, threshold) == score(gold, voted, official=False).f1


def _split_votes(rng: random.Random, n_texts: int):
    """Each gold name found by two of four members with its type and by a third with another type;
    beside it, a wrong span that two members agree on. Which members do what changes from text to
    text, so no weighting of span votes separates the names from the wrong spans."""
    gold, by_member = [], [[] for _ in range(4)]
    for _ in range(n_texts):
        right, wrong = rng.sample(["PS", "LC", "OG"], 2)
        gold.append(Example("가" * 10, (Span(0, 3, right),)))
        order, pair, spurious = rng.sample(range(4), 4), rng.sample(range(4), 2), rng.choice(["PS", "LC", "OG"])
        for i, member in enumerate(by_member):
            member.append([Span(0, 3, right)] * (i in order[:2]) + [Span(0, 3, wrong)] * (i == order[2])
                          + [Span(5, 8, spurious)] * (i in pair))
    return gold, by_member


def test_validation_chooses_boundary_votes_only_where_they_score_higher():
    gold, by_member = _split_votes(random.Random(0), 40)
    span_f1 = choose(gold, by_member, 9, prune=True)[2]
    pool, weights, threshold, f1 = choose_vote(gold, by_member, EnsembleConfig())
    assert pool and f1 == 1.0 > span_f1  # three quarters found each name; a span vote sees half
    assert [vote(s, weights, threshold, pool) for s in zip(*by_member)] == [list(ex.spans) for ex in gold]
    forced_pool, _, _, forced_f1 = choose_vote(gold, by_member, EnsembleConfig(vote="span"))
    assert forced_pool is False and forced_f1 == span_f1
    random_gold, random_votes = _random_votes(random.Random(0), 60, 4)  # random types: spans score higher
    assert choose_vote(random_gold, random_votes, EnsembleConfig())[0] is False
    right = [list(ex.spans) for ex in gold]
    assert choose_vote(gold, [right, right], EnsembleConfig())[0] is False  # a tie keeps span votes
    with pytest.raises(ValueError, match="vote must be one of auto, span, boundary, not 'types'"):
        EnsembleTagger(vote="types")


@pytest.mark.slow
@pytest.mark.parametrize("selection", [{"on": "dev"}, {"on": "nothing"},
                                       {"on": "validation", "n_valid": 5, "trained_on_validation": True}])
def test_a_member_that_saw_the_validation_or_was_chosen_on_dev_is_refused(tmp_path, overfit_examples, selection):
    for name in "ab":
        CRFTagger(max_iterations=5).fit(overfit_examples).save(tmp_path / name)
    meta = json.loads((tmp_path / "b" / "kner.json").read_text(encoding="utf-8"))
    meta["provenance"] = {"selection": selection}
    (tmp_path / "b" / "kner.json").write_text(json.dumps(meta), encoding="utf-8")
    refused = "b (was selected on dev|trained on all of train|was refit on train and validation)"
    with pytest.raises(ValueError, match=refused):
        EnsembleTagger(members=f"{tmp_path / 'a'},{tmp_path / 'b'}").fit([], overfit_examples)
    with pytest.raises(ValueError, match="at least two"):
        EnsembleTagger(members=str(tmp_path / "a")).fit([], overfit_examples)


@pytest.mark.slow
def test_a_crf_joins_an_ensemble_only_when_trained_with_validation_held_out(tmp_path, klue_dir):
    common = ["--data", str(klue_dir), "--train-limit", "120", "--dev-limit", "30", "--max-iterations", "5"]
    main(["train", "crf", *common, "--hold-out", "--out", str(tmp_path / "held")])
    main(["train", "crf", *common, "--hold-out", "--c1", "0.5", "--out", str(tmp_path / "held2")])
    main(["train", "crf", *common, "--out", str(tmp_path / "all")])
    ensemble = ["train", "ensemble", "--data", str(klue_dir), "--train-limit", "120", "--dev-limit", "30", "--no-prune"]
    main([*ensemble, "--members", f"{tmp_path / 'held'},{tmp_path / 'held2'}", "--out", str(tmp_path / "e")])
    assert [m.family for m in kner.load(tmp_path / "e").members] == ["crf", "crf"]
    with pytest.raises(SystemExit, match="kner train: .*all trained on all of train.*--hold-out"):
        main([*ensemble, "--members", f"{tmp_path / 'held'},{tmp_path / 'all'}", "--out", str(tmp_path / "e2")])


@pytest.mark.slow
def test_kner_train_ensemble_combines_validation_selected_runs_and_counts_their_size(tmp_path, klue_dir, capsys):
    tiny = ["--char-dim", "16", "--bigram-dim", "8", "--eojeol-dim", "4", "--kiwi-dim", "4", "--kiwi-vectors", "4",
            "--kiwi-vocab", "100", "--hidden", "16", "--max-epochs", "2", "--device", "cpu"]
    common = ["--data", str(klue_dir), "--train-limit", "120", "--dev-limit", "30"]
    for seed in ("1", "2"):
        main(["train", "bilstm-crf", *common, *tiny, "--seed", seed, "--out", str(tmp_path / f"m{seed}")])
    main(["train", "ensemble", *common, "--members", f"{tmp_path / 'm1'},{tmp_path / 'm2'}", "--no-prune", "--out", str(tmp_path / "e")])
    assert "saved ensemble" in capsys.readouterr().out
    ensemble = kner.load(tmp_path / "e")
    assert [m.family for m in ensemble.members] == ["bilstm-crf", "bilstm-crf"] and len(ensemble.weights) == 2
    assert model_bytes(tmp_path / "e") > model_bytes(tmp_path / "m1") + model_bytes(tmp_path / "m2")
    meta = json.loads((tmp_path / "e" / "kner.json").read_text(encoding="utf-8"))
    assert meta["provenance"]["selection"]["on"] == "validation"


def test_validation_leaves_out_members_that_add_nothing_or_only_errors():
    gold = [Example("이순신 장군", (PS(0, 3),)), Example("서울 시청", (LC(0, 2),)), Example("삼성 전자", (OG(0, 2),))]
    right = [list(ex.spans) for ex in gold]
    half = [list(ex.spans) for ex in gold[:2]] + [[]]
    noisy = [[PS(0, 3), LC(4, 6)], [LC(0, 2), OG(3, 5)], [OG(0, 2), PS(3, 5)]]
    weights, threshold, _ = choose(gold, [right, half, noisy], threshold_steps=9, prune=True)
    assert weights == [1.0, 0.0, 0.0] and [vote(s, weights, threshold) for s in zip(right, half, noisy)] == right
    kept, _, _ = choose(gold, [right, half, noisy], threshold_steps=9)
    assert 0.0 not in kept  # without pruning every member keeps a weight


def test_past_the_exhaustive_limit_weights_are_found_one_member_at_a_time(monkeypatch):
    rng = random.Random(1)
    gold = [Example("가" * 12, (PS(0, 3), LC(4, 6), OG(8, 11))) for _ in range(30)]
    right = [list(ex.spans) for ex in gold]
    noisy = [[[PS(0, 3), LC(4, 7), OG(9, 11)][rng.randrange(3)]] for _ in gold]
    members = [right, noisy, noisy, right, noisy]
    exhaustive = choose(gold, members, 9, prune=True)
    monkeypatch.setattr("kner.models.ensemble.EXHAUSTIVE_LIMIT", 1)
    weights, threshold, f1 = choose(gold, members, 9, prune=True)
    assert f1 == exhaustive[2] == 1.0 and exhaustive[0] == [1.0, 0.0, 0.0, 0.0, 0.0]
    assert [w > 0 for w in weights] == [True, False, False, False, False]  # one right member is enough
    assert [vote(s, weights, threshold) for s in zip(*members)] == right


def test_the_local_search_ends_where_no_move_of_up_to_three_members_helps(monkeypatch):
    gold, by_member = _random_votes(random.Random(3), 40, 6)  # two-member moves get stuck below a three-member one
    monkeypatch.setattr("kner.models.ensemble.EXHAUSTIVE_LIMIT", 1)
    weights, _, f1 = choose(gold, by_member, 9, prune=True)
    scorer = VoteScorer(gold, by_member)
    for other in itertools.product(WEIGHT_CHOICES, repeat=6):
        if any(other) and sum(a != b for a, b in zip(other, weights)) <= 3:
            assert all(scorer.f1(other, t / 10) <= f1 for t in range(1, 10))
    monkeypatch.setattr("kner.models.ensemble.LARGEST_MOVE", 2)
    assert choose(gold, by_member, 9, prune=True)[2] < f1


@pytest.mark.slow
def test_a_pruned_member_is_neither_run_nor_saved_but_its_validation_f1_is_recorded(tmp_path, overfit_examples):
    for name, iterations in (("good", 100), ("weak", 1)):
        CRFTagger(c1=0.0, c2=0.001, max_iterations=iterations).fit(overfit_examples).save(tmp_path / name)
    dirs = [str(tmp_path / "good"), str(tmp_path / "weak")]
    ensemble = EnsembleTagger(members=",".join(dirs)).fit([], overfit_examples)
    assert len(ensemble.members) == len(ensemble.weights) == 1 and ensemble.left_out == [dirs[1]]
    ensemble.save(tmp_path / "e")
    reloaded = kner.load(tmp_path / "e")
    assert len(reloaded.members) == 1 and reloaded.left_out == [dirs[1]] and reloaded.valid_f1 == ensemble.valid_f1 == 1.0
    weak = score(overfit_examples, kner.load(dirs[1]).predict([ex.text for ex in overfit_examples])).f1
    assert reloaded.candidates_valid_f1 == ensemble.candidates_valid_f1 == {dirs[0]: 1.0, dirs[1]: weak} and weak < 1.0
    texts = [ex.text for ex in overfit_examples]
    assert reloaded.predict(texts) == ensemble.predict(texts) == [list(ex.spans) for ex in overfit_examples]
    kept = EnsembleTagger(members=",".join(dirs), prune=False).fit([], overfit_examples)
    assert len(kept.members) == 2 and kept.left_out == []


@pytest.mark.slow
def test_the_kind_of_vote_is_saved_and_an_older_ensemble_votes_on_spans(tmp_path, overfit_examples):
    for name in "ab":
        CRFTagger(max_iterations=5).fit(overfit_examples).save(tmp_path / name)
    members = f"{tmp_path / 'a'},{tmp_path / 'b'}"
    EnsembleTagger(members=members, vote="boundary", prune=False).fit([], overfit_examples).save(tmp_path / "e")
    path = tmp_path / "e" / "ensemble.json"
    votes = json.loads(path.read_text(encoding="utf-8"))
    assert votes["vote"] == "boundary" and kner.load(tmp_path / "e").pool_types is True
    del votes["vote"]  # as ensemble.json was written before boundary votes
    path.write_text(json.dumps(votes), encoding="utf-8")
    assert kner.load(tmp_path / "e").pool_types is False
