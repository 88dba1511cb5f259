#!/usr/bin/env bash
# Recipes table in docs/results (GPU): baseline vs label smoothing, MixUp, EMA, (LR finder) and TTA on the
# offline proxy (+experiment=offline_demo: EfficientNet-Lite0 ImageNet weights, 1,000 Fashion-MNIST images of
# 4 look-alike classes, 8 epochs), the same seeds per arm. Prints final and best val accuracy and wall time.
#
#   FMNIST_DIR=/path/to/fashion-mnist-gz-files SEEDS="42 43" bash scripts/gpu/recipes.sh
#
# Assumption: FMNIST_DIR holds the four Fashion-MNIST .gz files (train/t10k images/labels-idx*-ubyte.gz), the
# layout of Debian's dataset-fashion-mnist package; it is passed as data.system_dir (fashion_mnist.py copies
# the files from there into <data.root>/FashionMNIST/raw/). Without FMNIST_DIR the Debian path is used.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-python}
SEEDS=${SEEDS:-42}
OUT=${OUT:-$(mktemp -d /tmp/ftlab_recipes.XXXX)}
mkdir -p "$OUT"
DATA=()
[[ -n "${FMNIST_DIR:-}" ]] && DATA=("data.system_dir=$FMNIST_DIR")
TRAINER=${TRAINER:-gpu}   # TRAINER=cpu DEVICE=cpu EXTRA=debug=fast: a dry run of the script on a CPU
DEVICE=${DEVICE:-cuda}
read -r -a EXTRA_ARGS <<<"${EXTRA:-}"
COMMON=(+experiment=offline_demo "trainer=$TRAINER" logger=csv "${EXTRA_ARGS[@]}" "paths.data_dir=$OUT/data" "callbacks.rich_progress_bar=null" "${DATA[@]}")

declare -A ARMS=(
  [baseline]=""
  [label_smoothing]="loss.label_smoothing=0.1"
  [mixup]="data.mixup_alpha=0.2"
  [ema]="ema.decay=0.99"
)
ORDER=(baseline label_smoothing mixup ema)
if grep -q "lr_find" src/ftlab/finetune/strategies.py 2>/dev/null; then ARMS[lr_find]="finetune.lr_find=true"; ORDER+=(lr_find); fi

final_acc() {  # final and best val/acc from the run's metrics.csv
  $PY - "$1" <<'PYEOF'
import csv, glob, sys
rows = [r for f in glob.glob(f"{sys.argv[1]}/**/metrics.csv", recursive=True) for r in csv.DictReader(open(f))]
accs = [float(r["val/acc"]) for r in rows if r.get("val/acc")]
print(f"{accs[-1]:.4f} {max(accs):.4f}" if accs else "nan nan")
PYEOF
}

printf "%-16s %-5s %-10s %-10s %-8s\n" arm seed final_acc best_acc wall_s | tee "$OUT/table.txt"
for seed in $SEEDS; do
  for arm in "${ORDER[@]}"; do
    log="$OUT/logs/$arm-$seed"
    start=$(date +%s%N)
    # shellcheck disable=SC2086
    $PY -m ftlab.train "${COMMON[@]}" seed="$seed" "paths.log_dir=$log" ${ARMS[$arm]} >"$OUT/$arm-$seed.out" 2>&1 \
      || { echo "$arm seed $seed failed: see $OUT/$arm-$seed.out"; continue; }
    wall=$(awk -v a="$start" -v b="$(date +%s%N)" 'BEGIN { printf "%.1f", (b - a) / 1e9 }')
    read -r final best < <(final_acc "$log")
    printf "%-16s %-5s %-10s %-10s %-8s\n" "$arm" "$seed" "$final" "$best" "$wall" | tee -a "$OUT/table.txt"
  done
  # TTA: the baseline's best checkpoint evaluated on the same val split without and with test-time views
  ckpt=$(find "$OUT/logs/baseline-$seed" -name best.ckpt | head -1)
  [[ -z "$ckpt" ]] && continue
  for tta in none hflip five_crop; do
    start=$(date +%s%N)
    $PY -m ftlab.eval "ckpt_path=$ckpt" "device=$DEVICE" "tta=$tta" "paths.data_dir=$OUT/data" \
      "hydra.run.dir=$OUT/eval/$tta-$seed" >"$OUT/eval-$tta-$seed.out" 2>&1 \
      || { echo "eval tta=$tta failed: see $OUT/eval-$tta-$seed.out"; continue; }
    wall=$(awk -v a="$start" -v b="$(date +%s%N)" 'BEGIN { printf "%.1f", (b - a) / 1e9 }')
    acc=$($PY -c "import json,sys; print(f\"{json.load(open(sys.argv[1]))['accuracy']:.4f}\")" "$OUT/eval/$tta-$seed/metrics.json")
    printf "%-16s %-5s %-10s %-10s %-8s\n" "tta_$tta(best)" "$seed" "$acc" "-" "$wall" | tee -a "$OUT/table.txt"
  done
done
echo "table: $OUT/table.txt"
