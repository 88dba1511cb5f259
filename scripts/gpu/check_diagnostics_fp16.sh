#!/usr/bin/env bash
# GPU check for ftlab.callbacks.diagnostics under fp16 loss scaling: the logged gradient norms must be the
# unscaled ones (the same order as a 32-bit run's, not ~65536x larger). Run from the repository root:
#   bash scripts/gpu/check_diagnostics_fp16.sh
set -euo pipefail
out=$(mktemp -d)
for precision in fp16 gpu; do
  "${PYTHON:-python3}" -m ftlab.train +experiment=smoke trainer=$precision finetune=freeze_unfreeze trainer.max_epochs=2 \
    callbacks.rich_progress_bar=null paths.log_dir="$out/$precision" >/dev/null
done
for precision in fp16 gpu; do
  echo "== trainer=$precision"
  "${PYTHON:-python3}" -m ftlab.report "$out/$precision" --diagnostics --format json |
    "${PYTHON:-python3}" -c 'import json,sys; d=json.load(sys.stdin)[0]["diagnostics"]; print({k: v for k, v in d.items() if k.startswith("grad_norm/")})'
done
