#!/usr/bin/env bash
# BatchNorm defaults (docs/results): a user's own folder of images with EfficientNet-Lite0 and every other option at its default
# (224 px, freeze_unfreeze: head only in epoch 1, then everything). Writes 1,000 train / 400 val Fashion-MNIST
# tops as PNG files in class folders, then runs the default and the BatchNorm / backbone-LR variants, and
# prints val accuracy per epoch for each.
# Usage: FMNIST_DIR=<folder with the four .gz files> scripts/gpu/bn_defaults.sh
set -uo pipefail
: "${FMNIST_DIR:?set FMNIST_DIR}"
PYTHON=${PYTHON:-python3}
LOGS=${LOGS:-logs}
folder=$(mktemp -d)
"$PYTHON" - "$FMNIST_DIR" "$folder" <<'PY'
import gzip, sys
from pathlib import Path
import numpy as np
from PIL import Image
src, out = Path(sys.argv[1]), Path(sys.argv[2])
names = {0: "tshirt_top", 2: "pullover", 4: "coat", 6: "shirt"}
def read(kind):
    images = np.frombuffer(gzip.open(src / f"{kind}-images-idx3-ubyte.gz").read(), np.uint8, offset=16)
    labels = np.frombuffer(gzip.open(src / f"{kind}-labels-idx1-ubyte.gz").read(), np.uint8, offset=8)
    return images.reshape(-1, 28, 28), labels
for kind, split, per_class in (("train", "train", 250), ("t10k", "val", 100)):
    images, labels = read(kind)
    for label, name in names.items():
        (out / split / name).mkdir(parents=True, exist_ok=True)
        for i, idx in enumerate(np.flatnonzero(labels == label)[:per_class]):
            Image.fromarray(images[idx]).save(out / split / name / f"{i:04d}.png")
PY
common=(data=imagefolder "data.root=$folder/train" "data.val_root=$folder/val" model=efficientnet_lite0
  trainer.max_epochs=4 trainer=gpu callbacks.rich_progress_bar=null "paths.log_dir=$LOGS" task_name=bn)
declare -A arms=(
  [1_defaults]=""
  [2_bn_momentum_0.1]="model.bn_momentum=0.1"
  [3_bn_all_frozen]="finetune.bn=all_frozen"
  [4_backbone_lr_0.01x]="param_groups.backbone_lr_mult=0.01"
)
for arm in $(printf '%s\n' "${!arms[@]}" | sort); do
  # shellcheck disable=SC2086
  "$PYTHON" -m ftlab.train "${common[@]}" ${arms[$arm]} "hydra.run.dir=$LOGS/bn/$arm" > "$LOGS/bn_$arm.log" 2>&1
  echo "$arm rc=$?"; grep -iE "batchnorm" "$LOGS/bn_$arm.log" | head -3
done
"$PYTHON" -m ftlab.report "$LOGS/bn" --epochs
