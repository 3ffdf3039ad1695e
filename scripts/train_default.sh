#!/usr/bin/env bash
# Train the bundled default model and its dense baseline (same data, tokens, active params).
#
#   bash scripts/train_default.sh [RUNS_DIR]          (from the repository root)
#
# Environment:
#   STEPS=N         train both models N optimizer steps (32 x 512 tokens each)
#   TIME_BUDGET=S   or: give the MoE S seconds, fix its step count from its measured speed,
#                   then train the dense model the same number of steps (same token budget)
#   PY=python3      the interpreter (on a GPU machine: source .mlx-cuda/setup.sh first)
# Runs on an NVIDIA GPU with MLX's CUDA backend (see docs/training.md), or slowly on CPU.
# Then: python scripts/train_default_report.py RUNS_DIR --install --plot docs/...png
set -euo pipefail
RUNS="${1:-runs/default}"
PY="${PY:-python3}"
DATA=data-cache/default   # the stage files name these paths
if [ ! -d "$DATA/tokens" ]; then
  "$PY" scripts/train_default_data.py --out "$DATA"
fi
moe_args=()
if [ -n "${STEPS:-}" ]; then
  moe_args+=("steps=$STEPS")
elif [ -n "${TIME_BUDGET:-}" ]; then
  moe_args+=("time_budget=$TIME_BUDGET")
fi
"$PY" -m mlx_mobilemoe.train configs/default_moe.yaml "out=$RUNS/moe" ${moe_args[@]+"${moe_args[@]}"}
N=$("$PY" -c "import json,sys; print(json.load(open(sys.argv[1]))['total_steps'])" \
      "$RUNS/moe/train_state/state.json")
echo "dense baseline: $N steps (as the MoE)"
# DENSE_CAP (seconds) guards a time-limited machine: if the dense model is the slower one, it
# stops early with its schedule shortened; the report then shows fewer steps than the MoE.
"$PY" -m mlx_mobilemoe.train configs/default_dense.yaml "out=$RUNS/dense" "steps=$N" \
  ${DENSE_CAP:+"time_budget=$DENSE_CAP"}
"$PY" scripts/train_default_report.py "$RUNS"
