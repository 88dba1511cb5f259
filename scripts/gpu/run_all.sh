#!/usr/bin/env bash
# Every GPU check of this round in one call on a lent GPU machine (no network; its own torch/lightning).
# Needs, carried from the project machine: .whl/ (hydra-core, omegaconf, antlr4, efficientnet-lite0 weights:
# ../shared/wheels) and .fmnist/ (Debian's four Fashion-MNIST .gz files). Writes logs and JSON to $OUT.
# Timing-sensitive parts (benchmark, main-job proxy table) run alone; accuracy-only runs share the GPU after.
set -uo pipefail
OUT=${OUT:-$PWD/gpu_out}; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/src:$PWD PYTHONUNBUFFERED=1 PY=python3 PYTHON=python3
export FMNIST_DIR=$PWD/.fmnist HTTP_PROXY=http://127.0.0.1:9 HTTPS_PROXY=http://127.0.0.1:9
export LOGS=/tmp/gpu_logs; mkdir -p "$LOGS"
t0=$(date +%s); stamp() { echo "[$(( $(date +%s) - t0 )) s] $*"; }
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
stamp "1 benchmark (alone)"
timeout 150 python3 -m ftlab.bench --json "$OUT/bench_gpu.json" > "$OUT/bench_gpu.log" 2>&1; echo "rc=$?"
tail -n 25 "$OUT/bench_gpu.log"
stamp "2 main-job proxy table (alone, sequential)"
timeout 170 bash scripts/gpu/main_job_proxy.sh > "$OUT/proxy.log" 2>&1; echo "rc=$?"; tail -n 40 "$OUT/proxy.log"
stamp "3 accuracy-only runs in the background: BatchNorm defaults, pretrained vs scratch, recipes"
( timeout 200 bash scripts/gpu/bn_defaults.sh > "$OUT/bn.log" 2>&1
  timeout 150 bash scripts/gpu/pretrained_vs_scratch.sh callbacks.rich_progress_bar=null > "$OUT/pvs.log" 2>&1 ) &
bg1=$!
( OUT=$OUT/recipes timeout 280 bash scripts/gpu/recipes.sh > "$OUT/recipes.log" 2>&1 ) &
bg2=$!
stamp "4 pytest -m gpu"
timeout 100 python3 -m pytest -q -m gpu tests/gpu -p no:cacheprovider > "$OUT/pytest_gpu.log" 2>&1; echo "rc=$?"
tail -n 15 "$OUT/pytest_gpu.log"
stamp "5 main job end to end vs plain PyTorch (shares the GPU with step 3)"
timeout 130 python3 -m ftlab.bench --main-job-only --main-job-override callbacks.rich_progress_bar=null \
  --json "$OUT/bench_main_job_gpu.json" > "$OUT/bench_main_job_gpu.log" 2>&1; echo "rc=$?"
tail -n 25 "$OUT/bench_main_job_gpu.log"
stamp "6 inference and diagnostics checks"
timeout 45 bash scripts/gpu/inference_check.sh > "$OUT/inference.log" 2>&1; echo "rc=$?"; tail -n 5 "$OUT/inference.log"
timeout 45 bash scripts/gpu/check_diagnostics_fp16.sh > "$OUT/diag.log" 2>&1; echo "rc=$?"; tail -n 6 "$OUT/diag.log"
stamp "7 waiting for the background runs"
wait $bg1 $bg2
tail -n 30 "$OUT/bn.log"; tail -n 20 "$OUT/pvs.log"; tail -n 20 "$OUT/recipes.log"
stamp "done"
