#!/usr/bin/env bash
# The GPU check (docs/gpu.md): GPU-marked tests, then one timed training run of every torch family.
#   scripts/gpu_check.sh prepare [KLUE_DIR] [--sllm DIR]  here, before: KLUE, tokenizers, pytest (and a
#                                            full-weight sLLM trained here, whose decoding is timed) into .gpu_data/
#   scripts/gpu_check.sh [--stages NAME...]  on the GPU machine (carry .gpu_data): summary into $OUT
#   scripts/gpu_check.sh --cpu-smoke         both steps with tiny models and a few sentences, on a CPU
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
OUT=${OUT:-gpu-check}
# kner runs from the checkout; the GPU machine has no kner install and no hub.
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false TQDM_DISABLE=1

case "${1:-}" in
  prepare)
    shift
    data=${KNER_DATA:-../shared/data/klue-ner-v1.1}
    if [ $# -gt 0 ] && [ "${1#--}" = "$1" ]; then data=$1; shift; fi
    exec "$PY" -m kner.gpu_check prepare --data "$data" --into .gpu_data "$@" ;;
  --cpu-smoke)
    smoke=$(mktemp -d)
    trap 'rm -rf "$smoke"' EXIT
    "$PY" -m kner.gpu_check prepare --smoke --data "${KNER_DATA:-../shared/data/klue-ner-v1.1}" --into "$smoke"
    "$PY" -m kner.gpu_check run --prepared "$smoke" --out "$OUT" ;;
  ""|--stages)
    [ -f .gpu_data/prepared.json ] || { echo "gpu_check: no .gpu_data; run 'scripts/gpu_check.sh prepare' first" >&2; exit 2; }
    exec "$PY" -m kner.gpu_check run --prepared .gpu_data --out "$OUT" "$@" ;;
  *)
    sed -n 2,5p "$0" >&2
    exit 2 ;;
esac
