#!/usr/bin/env bash
# GPU check of calibration and Grad-CAM (about a minute): the old-layout fixture checkpoint is calibrated on
# CUDA, then predicted with explanations on CUDA and on the CPU; probabilities must agree and one overlay per
# image must be written. Run from the repository root: bash scripts/gpu/inference_check.sh
set -euo pipefail
work=$(mktemp -d)
cp tests/fixtures/before_layout_shufflenet.ckpt "$work/model.ckpt"
"${PYTHON:-python3}" - "$work" <<'PY'
import sys, numpy as np
from pathlib import Path
from PIL import Image
root = Path(sys.argv[1]) / "images"; root.mkdir()
rng = np.random.default_rng(0)
for i in range(6):
    Image.fromarray(rng.integers(0, 256, (48, 40, 3), dtype=np.uint8)).save(root / f"{i}.jpg")
PY
"${PYTHON:-python3}" -m ftlab.eval ckpt_path="$work/model.ckpt" data=synthetic device=cuda calibrate=true hydra.run.dir="$work/eval"
"${PYTHON:-python3}" -m ftlab.predict ckpt_path="$work/model.ckpt" inputs="[$work/images]" format=json device=cuda \
  explain=true out_dir="$work/cam_gpu" > "$work/gpu.jsonl"
"${PYTHON:-python3}" -m ftlab.predict ckpt_path="$work/model.ckpt" inputs="[$work/images]" format=json device=cpu > "$work/cpu.jsonl"
"${PYTHON:-python3}" - "$work" <<'PY'
import json, sys
from pathlib import Path
work = Path(sys.argv[1])
gpu = [json.loads(l) for l in (work / "gpu.jsonl").read_text().splitlines()]
cpu = [json.loads(l) for l in (work / "cpu.jsonl").read_text().splitlines()]
worst = max(abs(g["probs"][k] - c["probs"][k]) for g, c in zip(gpu, cpu) for k in g["probs"])
overlays = len(list((work / "cam_gpu").glob("*.png")))
print(f"max |p_cuda - p_cpu| = {worst:.2e}; overlays written on CUDA: {overlays} of {len(gpu)}")
assert worst < 1e-3 and overlays == len(gpu) == 6
print("OK")
PY
