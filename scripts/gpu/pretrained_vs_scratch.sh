#!/usr/bin/env bash
# Rerun `+experiment=pretrained_vs_scratch` (ImageNet vs random EfficientNet-Lite0, 2 seeds each, one recipe
# and one BatchNorm momentum for both arms) on a CUDA GPU, then print the comparison table with val accuracy
# per epoch side by side, and draw the curves.
#
# Usage: FMNIST_DIR=<folder with Fashion-MNIST's four .gz files> scripts/gpu/pretrained_vs_scratch.sh [overrides]
#   FMNIST_DIR  train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz,
#               t10k-labels-idx1-ubyte.gz (what Debian's dataset-fashion-mnist installs; passed as data.system_dir)
#   PYTHON      interpreter with ftlab installed (default: python)
#   LOGS        log folder (default: logs)
set -euo pipefail
: "${FMNIST_DIR:?set FMNIST_DIR to the folder holding the four Fashion-MNIST .gz files}"
PYTHON=${PYTHON:-python}
LOGS=${LOGS:-logs}
cd "$(dirname "$0")/../.."

for name in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
  if [[ ! -f "$FMNIST_DIR/$name.gz" ]]; then
    echo "pretrained_vs_scratch.sh: $FMNIST_DIR/$name.gz is missing (FMNIST_DIR must hold all four .gz files)" >&2
    exit 2
  fi
done
"$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device: run this on a GPU machine')"

# trainer=gpu: fp32 on one GPU (with channels_last, the same for both arms). data.download=false: no network.
"$PYTHON" -m ftlab.train -m +experiment=pretrained_vs_scratch trainer=gpu \
  "data.system_dir=$FMNIST_DIR" data.download=false "paths.log_dir=$LOGS" "$@"

sweep=$(ls -td "$LOGS"/pretrained_vs_scratch/multirun/*/ | head -n 1)
echo "sweep: $sweep"
nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n 1 | sed 's/^/device: /' || true
"$PYTHON" -m ftlab.report "$sweep" --epochs --plot "$sweep/curves.png"
echo "curves: $sweep/curves.png"
