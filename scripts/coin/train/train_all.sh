#!/usr/bin/env bash
# The whole CoIN sequence, task after task (each task reads the previous task's directory).
# Usage: DATA_ROOT=/data/CoIN METHOD=dymoe bash scripts/coin/train/train_all.sh
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
for script in 1_ScienceQA 2_TextVQA 3_ImageNet 4_GQA 5_VizWiz 6_Grounding 7_VQAv2 8_OCRVQA; do
  echo "=== $script ==="
  bash "$here/$script.sh"
done
