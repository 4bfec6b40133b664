#!/usr/bin/env bash
# After each CoIN stage, evaluate that stage's checkpoint on every task seen so far (the lower
# triangle of the accuracy matrix), like CoIN's Eval_all.sh.
# Usage: DATA_ROOT=/data/CoIN METHOD=dymoe bash scripts/coin/eval/eval_all.sh
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
METHOD=${METHOD:-dymoe}
CKPT_ROOT=${CKPT_ROOT:-./checkpoints/${METHOD}/coin}
TASKS=(ScienceQA TextVQA ImageNet GQA VizWiz Grounding VQAv2 OCRVQA)
for stage in $(seq 1 8); do
  ckpt="$CKPT_ROOT/${stage}_${TASKS[$((stage-1))]}_llava_${METHOD}"
  for seen in $(seq 1 "$stage"); do
    CKPT="$ckpt" TASK="${TASKS[$((seen-1))]}" bash "$here/eval_task.sh"
  done
done
