#!/usr/bin/env bash
# The main job's recipe candidates, measured on its offline proxy: EfficientNet-Lite0 (its real ImageNet
# weights) on Fashion-MNIST's four look-alike tops, 1,000 train / 600 val, 224 px, 10 epochs, everything else
# as `+experiment=cats_dogs_cars`. Candidates: head only; last stage + head; last two stages + head; the
# whole-network schedule (head only for 2 epochs, then everything). Runs one after another on one GPU
# (TRAINER=gpu, the default) or on the CPU (TRAINER=auto: bf16 where native, as the main job; TRAINER=cpu: fp32) and
# prints val accuracy per epoch and each run's wall time (`ftlab.report --epochs`).
# Usage: FMNIST_DIR=<folder with the four .gz files> [TRAINER=gpu|auto|cpu] scripts/gpu/main_job_proxy.sh [extra overrides]
set -uo pipefail
: "${FMNIST_DIR:?set FMNIST_DIR}"
PYTHON=${PYTHON:-python3}
LOGS=${LOGS:-logs}
mkdir -p "$LOGS"
common=(+experiment=cats_dogs_cars data=fashion_mnist 'data.classes=[tshirt_top,pullover,coat,shirt]'
  data.train_size=1000 data.val_size=600 data.image_size=224 "data.system_dir=$FMNIST_DIR" data.download=false
  model=efficientnet_lite0 "trainer=${TRAINER:-gpu}" callbacks.rich_progress_bar=null "paths.log_dir=$LOGS" task_name=proxy)
declare -A arms=(
  [1_head_only]="finetune=linear_probe"
  [2_last_stage]="finetune=last_stages finetune.top_k=1 finetune.unfreeze_at_epoch=0"
  [3_last_two_stages]="finetune=last_stages finetune.top_k=2 finetune.unfreeze_at_epoch=0"
  [4_whole_network]="finetune=freeze_unfreeze finetune.unfreeze_at_epoch=2"
)
for arm in $(printf '%s\n' "${!arms[@]}" | sort); do
  start=$(date +%s%N)
  # shellcheck disable=SC2086
  "$PYTHON" -m ftlab.train "${common[@]}" ${arms[$arm]} "hydra.run.dir=$LOGS/proxy/$arm" "$@" \
    > "$LOGS/proxy_$arm.log" 2>&1
  rc=$?
  end=$(date +%s%N)
  echo "$arm rc=$rc wall_s=$(( (end - start) / 1000000 ))e-3"
  grep -E "feature cache built|best checkpoint" "$LOGS/proxy_$arm.log" | head -5
  [ $rc -eq 0 ] || tail -20 "$LOGS/proxy_$arm.log"
done
"$PYTHON" -m ftlab.report "$LOGS/proxy" --epochs
