#!/usr/bin/env bash
# "Head only first?" (docs/results): `finetune=last_stages finetune.top_k=1` on the offline proxy of the main
# job (EfficientNet-Lite0 with its ImageNet weights, Fashion-MNIST's four tops, 1,000/600 images, 224 px, 10
# epochs) with 0-4 head-only epochs first, per seed. The frozen stages' activations are cached on disk once per
# seed (float32, the values a memory cache holds) and shared by that seed's rows. Prints val/acc per epoch.
# Usage: FMNIST_DIR=<folder with the four .gz files> SEEDS="42 43 44" HEAD_ONLY="0 1 2 3 4" scripts/head_first_proxy.sh [overrides]
# (extra overrides go to every run, e.g. trainer.precision=bf16-mixed)
set -uo pipefail
cd "$(dirname "$0")/.."
: "${FMNIST_DIR:=/usr/share/datasets/fashion-mnist}"
PYTHON=${PYTHON:-python}
OUT=${OUT:-$(mktemp -d /tmp/ftlab_head_first.XXXX)}
TRAINER=${TRAINER:-cpu}
common=(+experiment=cats_dogs_cars data=fashion_mnist 'data.classes=[tshirt_top,pullover,coat,shirt]'
  data.train_size=1000 data.val_size=600 data.image_size=224 "data.system_dir=$FMNIST_DIR" data.download=false
  model=efficientnet_lite0 "trainer=$TRAINER" finetune=last_stages finetune.top_k=1 features.cache=disk
  callbacks.rich_progress_bar=null "paths.data_dir=$OUT/data" task_name=head_first)
for seed in ${SEEDS:-42 43 44}; do
  for k in ${HEAD_ONLY:-0 1 2 3 4}; do
    run="$OUT/runs/head_only_$k-seed_$seed"
    "$PYTHON" -m ftlab.train "${common[@]}" "seed=$seed" "finetune.unfreeze_at_epoch=$k" "hydra.run.dir=$run" "$@" \
      > "$OUT/head_only_$k-seed_$seed.log" 2>&1 || { echo "failed: $OUT/head_only_$k-seed_$seed.log"; continue; }
  done
done
"$PYTHON" -m ftlab.report "$OUT/runs" --epochs
