#!/bin/bash
# The GPU benchmark of issue 16 (benchmarks/gpu.py), ready for the lent GPU machine: < 8 minutes on one H200.
# Needs torch and scipy only (no NNI, no Optuna, no install: gpu.py maps nni_robust onto this checkout).
#   bash benchmarks/gpu.sh                 # JSON to $OUT/gpu.json when $OUT is set (the device tool's folder)
#   bash benchmarks/gpu.sh --smoke --device cpu
set -euo pipefail
cd "$(dirname "$0")/.."
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
json=()
if [ -n "${OUT:-}" ]; then json=(--json-out "$OUT/gpu.json"); fi
exec timeout 470 python benchmarks/gpu.py "${json[@]}" "$@"
