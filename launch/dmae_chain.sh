#!/usr/bin/env bash
# D-MAE / D²-MAE end to end on the embedded Fashion-MNIST (002 Sec. 5), CPU-sized:
#   1. MAE pre-training of a ViT-S-sized teacher (configs/dmae.py:teacher_cpu) -> <root>/teacher/export
#   2. D-MAE and D²-MAE ViT-Tiny students distilled from that export
#   3. a plain MAE ViT-Tiny for the same steps (the paper's baseline, Tab. 6)
# and prints the students' kNN / linear-probe results side by side.
# About 30 min on 2 CPU cores with the defaults below; a stage whose workdir
# already holds its final result is skipped, so a rerun only finishes what is left.
# Usage: bash launch/dmae_chain.sh [ROOT] [extra --config.* flags for every student]
# Env: TEACHER_STEPS (300), STUDENT_STEPS (150), BATCH (128), EVAL_TRAIN (5000),
#      EVAL_TEST (2000), LINEAR_EPOCHS (5).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="${1:-workdirs/dmae_chain}"; shift || true
TEACHER_STEPS="${TEACHER_STEPS:-300}"
STUDENT_STEPS="${STUDENT_STEPS:-150}"
BATCH="${BATCH:-128}"
export TF_CPP_MIN_LOG_LEVEL=2

EVAL=(--config.eval.max_train_examples="${EVAL_TRAIN:-5000}"
      --config.eval.max_eval_examples="${EVAL_TEST:-2000}"
      --config.eval.linear.epochs="${LINEAR_EPOCHS:-5}")
# Warm-up: 5% of each run, as in the CPU variants' 0.15 of 3 epochs.
warmup() { python3 -c "print(max(1, round(0.05 * $1)))"; }

done_already() {  # $1: workdir; true when its pre-training wrote a final result
  [ -f "$1/metrics.jsonl" ] && grep -q "\"kind\": \"final_eval\"" "$1/metrics.jsonl"
}

run() {  # $1: name, $2: config, then flags
  local name="$1" config="$2"; shift 2
  if done_already "$ROOT/$name"; then
    echo "[dmae_chain] $name: already done, skipped"; return
  fi
  echo "[dmae_chain] $name: $config $*"
  python3 -m ssl_jax.main --config "$config" --workdir "$ROOT/$name" "$@"
}

# 1. Teacher: plain MAE of the larger ViT; no probe of it (it only has to export).
if [ -f "$ROOT/teacher/export/encoder.json" ]; then
  echo "[dmae_chain] teacher: export exists, skipped"
else
  run teacher configs/dmae.py:teacher_cpu --config.total_steps="$TEACHER_STEPS" \
      --config.batch_size="$BATCH" --config.optim.warmup_steps="$(warmup "$TEACHER_STEPS")" \
      --config.eval.protocols="()"
fi
TEACHER="$(cd "$ROOT/teacher/export" && pwd)"

# 2-3. Students, same steps / batch / schedule; the random-init baseline once (MAE run).
STUDENT=(--config.total_steps="$STUDENT_STEPS" --config.batch_size="$BATCH"
         --config.optim.warmup_steps="$(warmup "$STUDENT_STEPS")" "${EVAL[@]}")
run mae configs/mae.py:vit_tiny "${STUDENT[@]}" "$@"
run dmae configs/dmae.py:dmae_cpu --config.dmae.teacher="$TEACHER" \
    --config.eval.compare_random_init=False "${STUDENT[@]}" "$@"
run d2mae configs/dmae.py:d2mae_cpu --config.dmae.teacher="$TEACHER" \
    --config.eval.compare_random_init=False "${STUDENT[@]}" "$@"

python3 - "$ROOT" <<'EOF'
import os, sys
from ssl_jax import metrics
root = sys.argv[1]
rows = []
for name in ("mae", "dmae", "d2mae"):
  final = [r for r in metrics.read(os.path.join(root, name)) if r["kind"] == "final_eval"][-1]
  rows.append((name, final))
keys = ["knn/top1", "linear/top1"]
print(f"\n[dmae_chain] ViT-Tiny students on Fashion-MNIST (teacher: {root}/teacher/export)")
print(f"{'student':<12}" + "".join(f"{k:>14}" for k in keys))
for name, final in rows:
  print(f"{name:<12}" + "".join(f"{final.get(k, float('nan')):>14.2f}" for k in keys))
mae = rows[0][1]
print(f"{'random init':<12}" + "".join(f"{mae.get(k + '_random_init', float('nan')):>14.2f}"
                                       for k in keys))
EOF
