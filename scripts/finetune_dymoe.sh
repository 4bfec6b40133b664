#!/usr/bin/env bash
# Train ONE continual task with DyMoE on top of upstream LLaVA (the analogue of LLaVA's
# scripts/v1_5/finetune_lora.sh). Every variable can be overridden from the environment;
# scripts/coin/train/*.sh set them per task. Defaults: LLaVA-1.5-7B recipe of method.md §4
# (Vicuna-7B-v1.5 + stage-1 projector, 1 epoch, global batch 128, lr 2e-4 cosine, warmup 0.03,
# projector lr 2e-5, bf16, max length 2048, gradient checkpointing).
set -euo pipefail

MODEL_BASE=${MODEL_BASE:-lmsys/vicuna-7b-v1.5}
VISION_TOWER=${VISION_TOWER:-openai/clip-vit-large-patch14-336}
PRETRAIN_ADAPTER=${PRETRAIN_ADAPTER-./checkpoints/llava-v1.5-7b-pretrain/mm_projector.bin}  # empty: no stage-1 projector
DATA_PATH=${DATA_PATH:?set DATA_PATH to the LLaVA-format train.json of the task}
IMAGE_FOLDER=${IMAGE_FOLDER:?set IMAGE_FOLDER to the image root}
OUTPUT_DIR=${OUTPUT_DIR:?set OUTPUT_DIR to a new directory whose name contains llava}
TASK_ID=${TASK_ID:-1}                 # 1-based, CoIN numbering
PREV_CKPT=${PREV_CKPT:-}              # the previous task's OUTPUT_DIR (required for TASK_ID > 1)
METHOD=${METHOD:-dymoe}               # dymoe | incmoelora | ... (python -c "from llava_dymoe.methods import METHODS; print(METHODS.names())")
DS_CONFIG=${DS_CONFIG:-./scripts/zero3.json}
INCLUDE=${INCLUDE:-localhost:0,1,2,3,4,5,6,7}
MASTER_PORT=${MASTER_PORT:-29600}
PER_DEVICE_BATCH=${PER_DEVICE_BATCH:-16}
GRAD_ACC=${GRAD_ACC:-1}               # 8 GPUs x 16 x 1 = global batch 128
EPOCHS=${EPOCHS:-1}
LR=${LR:-2e-4}
MM_PROJECTOR_LR=${MM_PROJECTOR_LR:-2e-5}
ATTN=${ATTN:-flash_attention_2}       # what LLaVA's train_mem.py uses; sdpa if flash-attn is not installed
REPORT_TO=${REPORT_TO:-none}
PRECISION_ARGS=${PRECISION_ARGS:---bf16 True --tf32 True}   # CPU: "--bf16 False --tf32 False"
NUM_WORKERS=${NUM_WORKERS:-4}
EXTRA_ARGS=${EXTRA_ARGS:-}            # e.g. "--dymoe_tau 0.3"
LAUNCHER=${LAUNCHER:-deepspeed}       # deepspeed | python (single process, e.g. CPU)

task_args=(--dymoe_method "$METHOD" --dymoe_task_id "$TASK_ID")
if [[ "$TASK_ID" -gt 1 ]]; then
  [[ -n "$PREV_CKPT" ]] || { echo "TASK_ID=$TASK_ID needs PREV_CKPT (task $((TASK_ID-1))'s OUTPUT_DIR)" >&2; exit 2; }
  task_args+=(--dymoe_prev_ckpt "$PREV_CKPT")       # experts and projector come from the previous task
elif [[ -n "$PRETRAIN_ADAPTER" ]]; then
  task_args+=(--pretrain_mm_mlp_adapter "$PRETRAIN_ADAPTER")
fi

if [[ "$LAUNCHER" == deepspeed ]]; then
  launch=(deepspeed --include "$INCLUDE" --master_port "$MASTER_PORT" --module llava_dymoe.train --deepspeed "$DS_CONFIG")
else
  launch=(python -m llava_dymoe.train)
fi

# shellcheck disable=SC2086
"${launch[@]}" \
  --model_name_or_path "$MODEL_BASE" --version v1 \
  --data_path "$DATA_PATH" --image_folder "$IMAGE_FOLDER" \
  --vision_tower "$VISION_TOWER" --mm_projector_type mlp2x_gelu --mm_vision_select_layer -2 \
  --mm_use_im_start_end False --mm_use_im_patch_token False --image_aspect_ratio pad \
  --group_by_modality_length True $PRECISION_ARGS \
  --output_dir "$OUTPUT_DIR" --num_train_epochs "$EPOCHS" \
  --per_device_train_batch_size "$PER_DEVICE_BATCH" --per_device_eval_batch_size 4 \
  --gradient_accumulation_steps "$GRAD_ACC" --evaluation_strategy no --save_strategy no \
  --learning_rate "$LR" --mm_projector_lr "$MM_PROJECTOR_LR" --weight_decay 0. --warmup_ratio 0.03 \
  --lr_scheduler_type cosine --logging_steps 1 --model_max_length 2048 --gradient_checkpointing True \
  --dataloader_num_workers "$NUM_WORKERS" --lazy_preprocess True --report_to "$REPORT_TO" \
  --attn_implementation "$ATTN" \
  "${task_args[@]}" $EXTRA_ARGS
