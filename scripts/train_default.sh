#!/usr/bin/env bash
# Train the bundled default model and its dense baseline (same data, tokens, active params).
#
#   bash scripts/train_default.sh [RUNS_DIR]          (from the repository root)
#
# Environment:
#   STEPS=N         train both models N optimizer steps of 32 x 512 tokens
#   TIME_BUDGET=S   or: give the MoE S seconds of training (after compiling), fix its step
#                   count from its measured speed, then train the dense model as many steps
#   PARALLEL=1      with STEPS: train both at once (one large GPU has room for both)
#   CAP=S           safety cap in seconds per model (a time-limited machine); a capped run
#                   stops early with its schedule shortened, and the report shows its steps
#   EXTRA="k=v .."  extra stage settings for both models (e.g. "moe.balance_gamma=3e-3")
#   PY=python3      the interpreter (on a GPU machine: source .mlx-cuda/setup.sh first)
# Runs on an NVIDIA GPU with MLX's CUDA backend (docs/training.md), or slowly on CPU. Then
#   python scripts/train_default_report.py RUNS_DIR --install --plot docs/training_expert_load.png
set -euo pipefail
RUNS="${1:-runs/default}"
PY="${PY:-python3}"
DATA=data-cache/default   # the stage files name these paths
if [ ! -d "$DATA/tokens" ]; then
  "$PY" scripts/train_default_data.py --out "$DATA"
fi
mkdir -p "$RUNS"
read -r -a extra <<< "${EXTRA:-}"
train() {  # train MODEL STEPS_OR_BUDGET_ARG
  "$PY" -m mlx_mobilemoe.train "configs/default_$1.yaml" "out=$RUNS/$1" "$2" \
    ${CAP:+"time_budget=$CAP"} ${extra[@]+"${extra[@]}"}
}
if [ -n "${PARALLEL:-}" ]; then
  [ -n "${STEPS:-}" ] || { echo "PARALLEL=1 needs STEPS" >&2; exit 2; }
  train moe "steps=$STEPS" > "$RUNS/moe.log" 2>&1 &
  moe_pid=$!
  status=0
  train dense "steps=$STEPS" > "$RUNS/dense.log" 2>&1 || status=1
  wait "$moe_pid" || status=1
  cat "$RUNS/moe.log" "$RUNS/dense.log"
  [ "$status" = 0 ] || exit 1
else
  if [ -n "${STEPS:-}" ]; then
    train moe "steps=$STEPS"
  elif [ -n "${TIME_BUDGET:-}" ]; then
    "$PY" -m mlx_mobilemoe.train configs/default_moe.yaml "out=$RUNS/moe" \
      "time_budget=$TIME_BUDGET" ${extra[@]+"${extra[@]}"}
  else
    train moe "steps=20000"
  fi
  N=$("$PY" -c "import json,sys; print(json.load(open(sys.argv[1]))['total_steps'])" \
        "$RUNS/moe/train_state/state.json")
  echo "dense baseline: $N steps (as the MoE)"
  train dense "steps=$N"
fi
"$PY" scripts/train_default_report.py "$RUNS"
