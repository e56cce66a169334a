#!/usr/bin/env bash
# LightGCN on Gowalla on one GPU, to the LightGCN paper's Recall@20 0.1830 / NDCG@20 0.1554,
# within a wall-time budget; prints the epoch lines, then SUMMARY {json} with wall_s,
# epochs_run, final_recall, final_ndcg (bench/lightgcn.py's keys).
#
#   bash bench/gpu_gowalla.sh [GOWALLA_DIR]       # default ../shared/datasets/lightgcn-gowalla
#
# Needs a CUDA build of jax in the environment (pip install -e . "jax[cuda12]"), or one
# already installed. Settings by environment variable:
#   BUDGET_S  training + evaluation wall-time budget in seconds (default 600)
#   EPOCHS    at most this many epochs (default 1000, the paper's schedule)
#   BATCH, LR batch size and Adam learning rate (default 2048 and 1e-3, the paper's protocol)
#   EVAL_EVERY evaluate every this many epochs (default 20); the run stops at the first
#             evaluation reaching TARGET (default 0.1830) or when the budget is spent.
#   STEPS_PER_CALL steps per compiled call, batches drawn on device (default 50: no host work
#             or transfer between steps, which is what a GPU step costs most)
set -euo pipefail
cd "$(dirname "$0")/.."
DATA="${1:-${GRAPHREC_DATASETS:-../shared/datasets}/lightgcn-gowalla}"
if [[ ! -f "$DATA/train.txt" ]]; then
  echo "no Gowalla split at $DATA (train.txt, test.txt); pass its folder as the first argument" >&2
  exit 2
fi
python -c 'import jax, sys; d = jax.devices()[0]; print("device:", d.device_kind, "platform:", d.platform);
sys.exit(0 if d.platform in ("gpu", "cuda", "rocm", "tpu") else "no accelerator: install jax[cuda12] or run elsewhere")'
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null || true
export XLA_PYTHON_CLIENT_PREALLOCATE="${XLA_PYTHON_CLIENT_PREALLOCATE:-false}"
started=$(date +%s)
python bench/lightgcn.py --data "$DATA" \
  --epochs "${EPOCHS:-1000}" --eval-every "${EVAL_EVERY:-20}" --seed "${SEED:-2020}" \
  --batch "${BATCH:-2048}" --lr "${LR:-1e-3}" --steps-per-call "${STEPS_PER_CALL:-50}" --prefetch 0 \
  --time-budget-s "${BUDGET_S:-600}" --target-recall "${TARGET:-0.1830}" \
  --out "${OUT:-.}/gpu_gowalla.json"
echo "wall time including set-up and compilation: $(( $(date +%s) - started )) s"
