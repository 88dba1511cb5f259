#!/usr/bin/env bash
# GPU benchmark (ftlab vs a plain loop; the main job vs a plain loop on the device), for a machine with one CUDA device and no network.
# Run from the repository root:  OUT=/some/folder bash scripts/gpu/bench.sh   (about 3-4 minutes on an H200)
# Writes to $OUT/: bench_gpu.json + .log (resnet18 and resnet50, bf16-mixed, channels_last, batch 256,
# 224 px: img/s, ftlab/hand ratio, MFU; cache end-to-end and steady-state ratios) and bench_main_job_gpu.json
# + .log (the real `ftlab.train +experiment=cats_dogs_cars` on staged stand-in assets, the whole-network
# schedule, ResNet-18 inference img/s, and a plain-PyTorch loop doing the whole-network work on the device).
set -euo pipefail
OUT="${OUT:-$PWD/gpu_out}"
PY="${PY:-python}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
export HTTP_PROXY=http://127.0.0.1:9 HTTPS_PROXY=http://127.0.0.1:9  # no network: fail fast, never hang
"$PY" - <<'PY' | tee "$OUT/env.txt"
import torch, torchvision, lightning
print("device:", torch.cuda.get_device_name() if torch.cuda.is_available() else "NO CUDA")
print("torch", torch.__version__, "torchvision", torchvision.__version__, "lightning", lightning.__version__)
PY
status=0
timeout 240 "$PY" -m ftlab.bench --json "$OUT/bench_gpu.json" > "$OUT/bench_gpu.log" 2>&1 || status=$?
tail -n 30 "$OUT/bench_gpu.log"
timeout 240 "$PY" -m ftlab.bench --main-job-only --main-job-override callbacks.rich_progress_bar=null \
  --json "$OUT/bench_main_job_gpu.json" > "$OUT/bench_main_job_gpu.log" 2>&1 || status=$?
tail -n 30 "$OUT/bench_main_job_gpu.log"
exit "$status"
