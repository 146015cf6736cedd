#!/usr/bin/env bash
# Data-parallel smoke run on CPU: the plain `kner train bert` command under torchrun with two
# processes (gloo backend), on a tiny random BERT whose WordPiece tokenizer is trained here on
# KLUE text. Rank 0 alone scores dev each epoch and saves; the Trainer splits the global batch
# (8) into 4 per process. Takes about 20 s. On GPUs, drop --device cpu and set --nproc_per_node
# to the GPU count; `accelerate launch --num_processes N .venv/bin/kner train bert ...` works too.
#
#   scripts/bert_ddp_smoke.sh [KLUE_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${VENV:-.venv}/bin
DATA=${1:-${KNER_DATA:-../shared/data/klue-ner-v1.1}}
WORK=$(mktemp -d -t kner-ddp-XXXX)
trap 'rm -rf "$WORK"' EXIT
export HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1

"$BIN/python" - "$DATA" "$WORK/tiny" <<'PY'
import sys
sys.path.insert(0, "tests")
from builders.bert import wordpiece_model
from kner.data import load_split
wordpiece_model([ex.text for ex in load_split("train", sys.argv[1], limit=2000)], sys.argv[2])
PY

TRANSFORMERS_VERBOSITY=info "$BIN/torchrun" --nproc_per_node 2 --log-dir "$WORK/logs" --redirects 3 \
  "$BIN/kner" train bert --data "$DATA" --train-limit 64 --dev-limit 16 --out "$WORK/run" \
  --base-model "$WORK/tiny" --epochs 2 --batch-size 8 --max-length 32 --stride 8 --device cpu

for rank in 0 1; do
  echo "--- rank $rank"
  grep -ah "Num examples\|Instantaneous batch size\|Total train batch size\|saved bert" \
    "$WORK"/logs/*/attempt_0/$rank/std*.log || echo "(no training summary: replicas log warnings only)"
done
"$BIN/kner" evaluate "$WORK/run" --data "$DATA" --limit 16
