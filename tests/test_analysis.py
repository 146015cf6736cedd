"""Error analysis on hand-made gold and predictions (every expected figure counted by hand below),
its report sections and plots, and learning-curve jobs (nested, validation kept out) and one tiny run."""
from __future__ import annotations

import json

import matplotlib.image
import pytest

from kner import analysis, benchmark
from kner.analysis_report import analyse, load_predictions, predictions_path, save_predictions
from kner.benchmark import BenchmarkError, _jobs, run_benchmark
from kner.cli import build_parser
from kner.data import load_split, prepare_splits
from kner.report import aggregate_seeds, render_markdown, write_report
from kner.types import Example, Span
from test_report import fake_model, fake_result


def _text(n: int) -> str:
    return "".join(chr(0xAC00 + 7 * i) for i in range(n))  # n distinct syllables


S = Span
# Gold entities G1..G8 over four sentences; s0 is 40 characters long, the others at most 12.
GOLD = [
    Example(_text(40), (S(0, 3, "PS"), S(5, 8, "LC"), S(10, 14, "OG"), S(16, 18, "DT")), "x_0-wikitree"),  # G1-G4
    Example(_text(10), (S(0, 4, "LC"), S(6, 8, "PS")), "x_1-nsmc"),  # G5, G6
    Example(_text(6), (), "x_2-nsmc"),
    Example(_text(12), (S(0, 6, "OG"), S(8, 10, "PS")), "x_3-wikitree"),  # G7, G8
]
PRED = {
    # A: G1 correct; G2 as OG (wrong type); G3 cut short (wrong boundary); G4 longer and TI (wrong both);
    # G5 split in two: the LC half pairs (wrong boundary, same type first), the OG half is spurious; G6
    # missed; (4,10,OG) overlaps G7 and G8 by 2 characters each and pairs with G7 (same type), so G8 is missed.
    "A": [[S(0, 3, "PS"), S(5, 8, "OG"), S(10, 12, "OG"), S(16, 19, "TI")], [S(0, 2, "LC"), S(2, 4, "OG")], [],
          [S(4, 10, "OG")]],
    # B: G1, G2, G6, G7, G8 correct; G5 as OG (wrong type); G3, G4 missed; (19,20,QT) and (0,2,PS) spurious.
    "B": [[S(0, 3, "PS"), S(5, 8, "LC"), S(19, 20, "QT")], [S(0, 4, "OG"), S(6, 8, "PS")], [S(0, 2, "PS")],
          [S(0, 6, "OG"), S(8, 10, "PS")]],
    # C: exactly G3 and G4, nothing else.
    "C": [[S(10, 14, "OG"), S(16, 18, "DT")], [], [], []],
}


def counts(name: str) -> dict:
    return analysis.taxonomy(analysis.match_all(GOLD, PRED[name]))


def test_taxonomy_counts_by_hand_and_both_identities():
    a = counts("A")
    assert a["total"] == {"correct": 1, "wrong_type": 1, "wrong_boundary": 3, "wrong_both": 1, "missed": 2,
                          "spurious": 1}
    assert (a["n_gold"], a["n_pred"]) == (8, 7)  # 1+1+3+1+2 gold; 1+1+3+1+1 predicted (4+2+0+1 spans)
    assert a["by_type"]["PS"] == {"correct": 1, "wrong_type": 0, "wrong_boundary": 0, "wrong_both": 0, "missed": 2,
                                  "spurious": 0}  # G1; G6, G8
    assert a["by_type"]["LC"]["wrong_type"] == 1 and a["by_type"]["LC"]["wrong_boundary"] == 1  # G2; G5
    assert a["by_type"]["OG"]["wrong_boundary"] == 2 and a["by_type"]["OG"]["spurious"] == 1  # G3, G7; half of G5
    assert a["by_type"]["DT"]["wrong_both"] == 1 and sum(a["by_type"]["TI"].values()) == 0  # TI only as a predicted type
    b = counts("B")
    assert b["total"] == {"correct": 5, "wrong_type": 1, "wrong_boundary": 0, "wrong_both": 0, "missed": 2,
                          "spurious": 2}
    assert (b["n_gold"], b["n_pred"]) == (8, 8)
    for name, pred in PRED.items():  # the identities against the plain counts
        t = counts(name)
        assert t["n_gold"] == sum(len(ex.spans) for ex in GOLD) and t["n_pred"] == sum(map(len, pred)), name


def test_one_prediction_over_two_gold_entities_pairs_once():
    matches = analysis.match_spans([S(0, 6, "OG"), S(8, 10, "PS")], [S(4, 10, "PS")])
    # both overlaps are 2 characters; the same-type pair (with PS) wins, the OG entity is missed
    assert [m.kind for m in matches] == ["wrong_boundary", "missed"]
    assert matches[0].gold == S(8, 10, "PS") and matches[1].gold == S(0, 6, "OG")


def test_type_confusion_by_hand():
    a = analysis.confusion(analysis.match_all(GOLD, PRED["A"]))
    assert a["LC"]["OG"] == 1 and a["DT"]["TI"] == 1  # G2 as OG (same span); G4 as TI (longer)
    assert sum(sum(row.values()) for row in a.values()) == 2  # = wrong_type + wrong_both of A
    b = analysis.confusion(analysis.match_all(GOLD, PRED["B"]))
    assert b["LC"]["OG"] == 1 and sum(sum(row.values()) for row in b.values()) == 1  # G5 as OG


def test_agreement_and_oracle_by_hand():
    agree = analysis.agreement(GOLD, PRED)
    # exact finds: A {G1}; B {G1, G2, G6, G7, G8}; C {G3, G4}
    assert agree["found"] == {"A": 1, "B": 5, "C": 2} and agree["n_gold"] == 8
    assert agree["only"]["A"] == {"B": 0, "C": 1} and agree["only"]["B"] == {"A": 4, "C": 5}
    assert agree["only"]["C"] == {"A": 2, "B": 2}
    assert (agree["any_model"], agree["every_model"]) == (7, 0)  # all but G5; none found by all three
    # s0 and s1 are wrong for every model; s2 (no entities) is right for A and C, s3 for B
    assert agree["all_wrong"] == 2 and [c["id"] for c in agree["all_wrong_examples"]] == ["x_0-wikitree", "x_1-nsmc"]
    assert agree["all_wrong_examples"][1]["predicted"]["B"][0] == [0, 4, "OG", GOLD[1].text[:4]]


def test_slices_by_hand():
    b = analysis.slices(GOLD, PRED["B"])  # F1 = 2 tp / (gold + predicted)
    assert b["source"]["wikitree"]["f1"] == pytest.approx(8 / 11)  # s0+s3: tp 4, gold 6, predicted 5
    assert b["source"]["nsmc"]["f1"] == pytest.approx(2 / 5)  # s1+s2: tp 1, gold 2, predicted 3
    assert list(b["sentence_length"]) == ["≤30", "31–50"]
    assert b["sentence_length"]["31–50"]["f1"] == pytest.approx(4 / 7)  # s0: tp 2, gold 4, predicted 3
    assert b["sentence_length"]["≤30"]["f1"] == pytest.approx(6 / 9)  # tp 3, gold 4, predicted 5
    ent = b["entity_length"]
    assert list(ent) == ["1", "2", "3", "4–5", "6–9", "10+"]
    assert ent["2"]["f1"] == pytest.approx(4 / 6) and ent["2"]["n_gold"] == 3  # G4 G6 G8; tp G6 G8; 3 predicted
    assert (ent["3"]["f1"], ent["4–5"]["f1"], ent["6–9"]["f1"]) == (1.0, 0.0, 1.0)
    assert ent["1"]["n_pred"] == 1 and ent["1"]["n_gold"] == 0  # the spurious QT
    assert analysis.bucket(81, (30, 50, 80)) == "81+" and analysis.source("no id") == "unknown"


def test_examples_are_real_spans_of_each_kind():
    ex = analysis.error_examples(GOLD, analysis.match_all(GOLD, PRED["A"]), per_kind=3)
    assert set(ex) == set(analysis.ERRORS)
    assert [c["id"] for c in ex["wrong_boundary"]] == ["x_0-wikitree", "x_1-nsmc", "x_3-wikitree"]
    first = ex["wrong_boundary"][0]
    assert first["gold"] == [10, 14, "OG", GOLD[0].text[10:14]] and first["pred"] == [10, 12, "OG", GOLD[0].text[10:12]]
    assert ex["spurious"] == [{"id": "x_1-nsmc", "text": GOLD[1].text, "gold": None,
                               "pred": [2, 4, "OG", GOLD[1].text[2:4]]}]


def _analysed(tmp_path, names=("A", "B", "C")) -> dict:
    models = [fake_model(f"fam{n}", 0.5, name=n) for n in names]
    for n in names:
        save_predictions(predictions_path(tmp_path, n), GOLD, PRED[n])
    return analyse(models, GOLD, tmp_path)


def test_analyse_reads_saved_predictions_and_skips_what_it_cannot_use(tmp_path):
    models = [fake_model("a", 0.5, name="A"), fake_model("b", 0.5, name="B"), fake_model("old", 0.5),
              fake_model("a", 0.4, name="A-n100", train_size=100), fake_model("a", 0.6, name="A-seed2")]
    save_predictions(predictions_path(tmp_path, "A"), GOLD, PRED["A"])
    assert load_predictions(predictions_path(tmp_path, "A"), GOLD) == PRED["A"]
    save_predictions(predictions_path(tmp_path, "B"), [Example(ex.text, ex.spans, "other") for ex in GOLD], PRED["B"])
    result = analyse(models, GOLD, tmp_path)
    assert list(result["models"]) == ["A"]  # one run per family: no seed or train-size run
    assert "other" in result["skipped"]["B"] and "no saved dev predictions" in result["skipped"]["old"]
    assert result["models"]["A"]["taxonomy"]["total"]["wrong_boundary"] == 3 and "agreement" not in result


def test_a_familys_next_seed_stands_in_for_a_first_run_without_saved_predictions(tmp_path):
    models = [fake_model("a", 0.5, name="A"), fake_model("a", 0.6, name="A-seed2"), fake_model("a", 0.7, name="A-seed3")]
    for name in ("A-seed2", "A-seed3"):
        save_predictions(predictions_path(tmp_path, name), GOLD, PRED["A"])
    result = analyse(models, GOLD, tmp_path)
    assert list(result["models"]) == ["A-seed2"] and "no saved dev predictions" in result["skipped"]["A"]


def test_report_with_analysis_and_learning_curves_writes_readable_plots(tmp_path):
    result = fake_result()
    result["analysis"] = _analysed(tmp_path / "parts")
    result["models"] += [fake_model("crf", 0.60, name="crf-n1000", train_size=1000, n_train=1000)]
    result["learning_curves"] = analysis.learning_curves(result["models"])
    assert [p["n_train"] for p in result["learning_curves"]["crf"]] == [1000, 2000]  # the full run is the last point
    assert aggregate_seeds(result["models"])["crf"]["runs"] == ["crf"]  # a train-size run is no seed
    paths = write_report(result, tmp_path)
    md = paths["md"].read_text(encoding="utf-8")
    for key in ("taxonomy", "confusion", "slices", "learning"):
        image = matplotlib.image.imread(paths[key])
        assert image.shape[0] > 100 and image.shape[1] > 100 and image.std() > 0  # drawn, not blank
        assert f"]({paths[key].name})" in md
    assert "| A | 4 | 8 | 7 | 1 | 1 | 3 | 1 | 2 | 1 |" in md  # the hand counts above
    assert "| **B** | 4 | · | 5 |" in md  # B finds 4 that A misses, 5 that C misses
    assert "| **any model (oracle)** | 7 | 0.8750 |" in md
    assert "2 sentences no model tags exactly right" in md
    assert md.index("## Learning curves") < md.index("## Error analysis") < md.index("## How the figures")


@pytest.mark.parametrize("names", [("B",), ()])
def test_report_with_one_family_or_none_analysed_still_renders(tmp_path, names):
    result = fake_result()
    result["models"] = [m for m in result["models"] if m["family"] == "crf"]
    result["analysis"] = _analysed(tmp_path / "parts", names)
    paths = write_report(result, tmp_path)
    md = paths["md"].read_text(encoding="utf-8")
    assert "Agreement between models" not in md and "learning" not in paths
    assert ("### Error kinds" in md) == bool(names) and ("taxonomy" in paths) == bool(names)
    assert "## Error analysis" not in render_markdown(fake_result())  # no analysis data: no section


@pytest.mark.slow
def test_learning_curve_jobs_are_nested_and_keep_validation_out(klue_dir):
    settings = {"data": str(klue_dir), "out": "unused", "train_limit": 600, "dev_limit": 100, "reuse": True,
                "repeats": 1, "latency_samples": 1, "recipe": None, "select_on": "validation", "valid_fraction": 0.05,
                "monitor_dev": False}
    jobs = _jobs("bilstm-crf", None, {}, 2, settings, [400, 200, 600, 5000])
    assert [(j["name"], j["train_limit"], j["train_size"]) for j in jobs] == [
        ("bilstm-crf", 600, None), ("bilstm-crf-seed14", 600, None), ("bilstm-crf-n200", 200, 200),
        ("bilstm-crf-n400", 400, 400)]  # sizes at or above the cap would repeat the full run
    assert jobs[2]["seed"] == jobs[0]["seed"] and jobs[3]["overrides"] == jobs[0]["overrides"]
    splits = [prepare_splits(j["data"], j["train_limit"], j["dev_limit"], j["select_on"], j["valid_fraction"])
              for j in (jobs[2], jobs[3], jobs[0])]
    dev = {ex.text for ex in load_split("dev", klue_dir)}
    for small, large in zip(splits, splits[1:]):
        assert {e.id for e in small.train} < {e.id for e in large.train}
        assert {e.id for e in small.valid} <= {e.id for e in large.valid}
    for s in splits:
        assert s.valid and {e.id for e in s.train}.isdisjoint(e.id for e in s.valid)
        assert dev.isdisjoint(e.text for e in s.train + s.valid)


@pytest.mark.slow
def test_tiny_crf_learning_curve_and_analysis_end_to_end(tmp_path, klue_dir):
    result = run_benchmark(["crf"], str(klue_dir), tmp_path, train_limit=300, dev_limit=40, repeats=1,
                           latency_samples=2, overrides={"crf": {"max_iterations": 5}}, train_sizes=(100, 200))
    assert [m["name"] for m in result["models"]] == ["crf", "crf-n100", "crf-n200"]
    assert [(p["name"], p["n_train"]) for p in result["learning_curves"]["crf"]] == [
        ("crf-n100", 100), ("crf-n200", 200), ("crf", 300)]
    assert result["families"]["crf"]["runs"] == ["crf"] and result["settings"]["train_sizes"] == [100, 200]
    crf = result["models"][0]
    taxonomy = result["analysis"]["models"]["crf"]["taxonomy"]
    assert (taxonomy["n_gold"], taxonomy["n_pred"]) == (crf["n_gold"], crf["n_pred"])  # the scorer's counts
    assert taxonomy["total"]["correct"] == round(crf["recall"] * crf["n_gold"])
    lines = (tmp_path / "parts" / "crf.predictions.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 40 and json.loads(lines[0])["id"] == load_split("dev", klue_dir, limit=1)[0].id
    md = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert "## Learning curves" in md and "](learning_curves.png)" in md and "### Error kinds" in md
    assert (tmp_path / "learning_curves.png").stat().st_size > 0 and not list((tmp_path / "parts").glob(".*"))


def test_learning_curves_can_leave_a_slow_family_out(tmp_path, klue_dir, monkeypatch):
    ran = []

    def record(job):
        ran.append(job["name"])
        return {"family": job["family"], "name": job["name"], "error": "not run in this test"}

    monkeypatch.setattr(benchmark, "_run_in_child", record)
    with pytest.raises(BenchmarkError):
        run_benchmark(["crf", "bilstm-crf"], str(klue_dir), tmp_path, train_limit=300, dev_limit=40,
                      train_sizes=(100, 200), curve_families=["crf"])
    assert ran == ["crf", "crf-n100", "crf-n200", "bilstm-crf"]
    with pytest.raises(ValueError, match="bert, which is not benchmarked"):
        run_benchmark(["crf"], str(klue_dir), tmp_path, train_sizes=(100,), curve_families=["bert"])
    args = build_parser().parse_args(["benchmark", "--models", "crf,bert", "--out", "o", "--curve-models", "crf"])
    assert args.curve_models == "crf"


def test_train_sizes_flag_parses_counts_and_all():
    args = build_parser().parse_args(["benchmark", "--models", "crf", "--out", "o", "--train-sizes", "1000, 2000,all"])
    assert args.train_sizes == [1000, 2000]  # "all" is the full run, which always runs
    assert build_parser().parse_args(["benchmark", "--models", "crf", "--out", "o"]).train_sizes == ()
    with pytest.raises(SystemExit):
        build_parser().parse_args(["benchmark", "--models", "crf", "--out", "o", "--train-sizes", "1k"])
