#!/usr/bin/env bash
# One CoIN task: bash scripts/coin/train/coin_task.sh TASK_ID NAME (what 1_ScienceQA.sh ... call).
# DATA_ROOT holds CoIN's Instructions_Original/ and cl_dataset/ (HF dataset Zacks-Chen/CoIN); other
# variables as in scripts/finetune_dymoe.sh. Output: $CKPT_ROOT/<id>_<name>_llava_<method>; task t reads
# task t-1's directory.
set -euo pipefail
cd "$(dirname "$0")/../../.."
TASKS=(ScienceQA TextVQA ImageNet GQA VizWiz Grounding VQAv2 OCRVQA)
id=${1:?usage: coin_task.sh TASK_ID NAME}
name=${2:?usage: coin_task.sh TASK_ID NAME}
[[ "${TASKS[$((id-1))]}" == "$name" ]] || { echo "CoIN task $id is ${TASKS[$((id-1))]}, not $name" >&2; exit 2; }
DATA_ROOT=${DATA_ROOT:-./playground/data/CoIN}
METHOD=${METHOD:-dymoe}
CKPT_ROOT=${CKPT_ROOT:-./checkpoints/${METHOD}/coin}
export METHOD TASK_ID=$id
export DATA_PATH=${DATA_PATH:-$DATA_ROOT/Instructions_Original/$name/train.json}
export IMAGE_FOLDER=${IMAGE_FOLDER:-$DATA_ROOT/cl_dataset}
export OUTPUT_DIR=${OUTPUT_DIR:-$CKPT_ROOT/${id}_${name}_llava_${METHOD}}
if [[ "$id" -gt 1 ]]; then
  export PREV_CKPT=${PREV_CKPT:-$CKPT_ROOT/$((id-1))_${TASKS[$((id-2))]}_llava_${METHOD}}
fi
exec bash scripts/finetune_dymoe.sh
