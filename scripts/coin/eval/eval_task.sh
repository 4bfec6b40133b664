#!/usr/bin/env bash
# Evaluate one DyMoE checkpoint on one CoIN task with the UNCHANGED upstream llava.eval modules
# (through the llava_dymoe.eval shim), chunked over GPUs like LLaVA's scripts/v1_5/eval/*.sh,
# then merged and scored.
# Usage: CKPT=./checkpoints/dymoe/coin/3_ImageNet_llava_dymoe TASK=ScienceQA bash scripts/coin/eval/eval_task.sh
# Question/reference files come from: python -m llava_dymoe.cli convert-coin --suite eval_suites/coin.yaml --data-root $DATA_ROOT
set -euo pipefail
cd "$(dirname "$0")/../../.."
CKPT=${CKPT:?set CKPT to a task output_dir}
TASK=${TASK:?set TASK: ScienceQA TextVQA ImageNet GQA VizWiz Grounding VQAv2 OCRVQA}
MODEL_BASE=${MODEL_BASE:-lmsys/vicuna-7b-v1.5}
DATA_ROOT=${DATA_ROOT:-./playground/data/CoIN}
RESULT_ROOT=${RESULT_ROOT:-./results/CoIN/LLaVA-DyMoE}
GPUS=${CUDA_VISIBLE_DEVICES:-0}
IFS=',' read -ra GPULIST <<< "$GPUS"
CHUNKS=${#GPULIST[@]}

case "$TASK" in
  ScienceQA) GEN=llava.eval.model_vqa_science; Q=converted/ScienceQA/questions.json;  SCORER=sqa_letter ;;
  TextVQA)   GEN=llava.eval.model_vqa_loader;  Q=converted/TextVQA/questions.jsonl;   SCORER=vqa_soft ;;
  ImageNet)  GEN=llava.eval.model_vqa;         Q=converted/ImageNet/questions.jsonl;  SCORER=contains ;;
  GQA)       GEN=llava.eval.model_vqa_loader;  Q=converted/GQA/questions.jsonl;       SCORER=exact ;;
  VizWiz)    GEN=llava.eval.model_vqa_loader;  Q=converted/VizWiz/questions.jsonl;    SCORER=exact ;;
  Grounding) GEN=llava.eval.model_vqa;         Q=converted/Grounding/questions.jsonl; SCORER=grounding_iou ;;
  VQAv2)     GEN=llava.eval.model_vqa;         Q=converted/VQAv2/questions.jsonl;     SCORER=vqa_soft ;;
  OCRVQA)    GEN=llava.eval.model_vqa_loader;  Q=converted/OCRVQA/questions.jsonl;    SCORER=exact ;;
  *) echo "unknown TASK $TASK" >&2; exit 2 ;;
esac
REF="$(dirname "$Q")/references.jsonl"
OUT="$RESULT_ROOT/$TASK/$(basename "$CKPT")"
mkdir -p "$OUT"

extra=()
[[ "$GEN" == llava.eval.model_vqa_science ]] && extra+=(--single-pred-prompt)
for IDX in $(seq 0 $((CHUNKS-1))); do
  CUDA_VISIBLE_DEVICES=${GPULIST[$IDX]} python -m llava_dymoe.eval "$GEN" \
    --model-path "$CKPT" --model-base "$MODEL_BASE" \
    --question-file "$DATA_ROOT/$Q" --image-folder "$DATA_ROOT/cl_dataset" \
    --answers-file "$OUT/${CHUNKS}_${IDX}.jsonl" --num-chunks "$CHUNKS" --chunk-idx "$IDX" \
    --temperature 0 --conv-mode vicuna_v1 "${extra[@]}" &
done
wait
cat "$OUT"/${CHUNKS}_*.jsonl > "$OUT/merge.jsonl"
python -m llava_dymoe.cli score --scorer "$SCORER" --answers "$OUT/merge.jsonl" \
  --references "$DATA_ROOT/$REF" --output "$OUT/score.json" | tee "$OUT/Result.txt"
