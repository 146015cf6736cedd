#!/usr/bin/env bash
# The base install (no extras, so no torch) in a fresh virtual environment: the CRF trains, predicts,
# evaluates and benchmarks from the command line and from Python, and `kner train bert` fails with
# one line naming the extra. Needs KNER_DATA (the KLUE NER release) and PyPI for the base packages.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${KNER_DATA:?set KNER_DATA to the KLUE NER release folder}"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 -m venv "$work/venv"
"$work/venv/bin/python" -m pip install -q -e .
py="$work/venv/bin/python" kner="$work/venv/bin/kner"
fail() { echo "base install check: $*" >&2; exit 1; }

"$py" -c "import importlib.util as u, sys; sys.exit(u.find_spec('torch') is not None)" || fail "torch is installed"
"$kner" train crf --out "$work/crf" --train-limit 200 --dev-limit 50 --max-iterations 30 > "$work/log" 2>&1 ||
    { cat "$work/log"; fail "kner train crf failed"; }
printf '이순신 장군은 서울에 갔다.\n\n' | "$kner" predict "$work/crf" --input - --format json > "$work/pred.jsonl"
"$kner" evaluate "$work/crf" --limit 50 --json > "$work/eval.json"
"$kner" benchmark --models crf --out "$work/bench" --train-limit 200 --dev-limit 50 \
    --set crf.max_iterations=30 --repeats 1 > "$work/log" 2>&1 || { cat "$work/log"; fail "kner benchmark failed"; }
"$py" - "$work" 2> "$work/log" <<'PY' || { cat "$work/log"; fail "the Python API check failed"; }
import json, sys
from pathlib import Path

import kner
from kner.data import load_split
from kner.scoring import score

work = Path(sys.argv[1])
rows = [json.loads(line) for line in (work / "pred.jsonl").read_text(encoding="utf-8").splitlines()]
assert [r["text"] for r in rows] == ["이순신 장군은 서울에 갔다.", ""] and rows[1]["entities"] == [], rows
evaluated = json.loads((work / "eval.json").read_text(encoding="utf-8"))
dev = load_split("dev", limit=50)
scores = score(dev, kner.load(work / "crf").predict([ex.text for ex in dev]))
assert abs(scores.f1 - evaluated["f1"]) < 1e-9 and scores.f1 > 0.3, (scores.f1, evaluated["f1"])
assert (work / "bench" / "report.md").is_file()
tagger = kner.models.get("crf")(max_iterations=10).fit(dev)
assert len(tagger.predict(["서울", ""])) == 2
PY
if "$kner" train bert --out "$work/bert" 2> "$work/bert.err"; then fail "kner train bert ran without torch"; fi
[ "$(cat "$work/bert.err")" = "kner train: bert needs the deep extra: pip install 'kner[deep]'" ] ||
    fail "kner train bert said: $(cat "$work/bert.err")"
echo "base install check: CRF trained, predicted, evaluated and benchmarked without torch; bert names its extra"
