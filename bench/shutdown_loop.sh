#!/bin/bash
# Issue 12's "Done when": N short pre-training runs in a row (fresh
# interpreters, eval.protocols=()), each must exit 0 (no abort at shutdown).
# Usage: bench/shutdown_loop.sh [N=20] [OUT=/tmp/ssl_jax_shutdown_loop] [extra --config.* flags]
# Prints one line per run and a tally; exits 1 if any run failed.
set -u
N=${1:-20}; OUT=${2:-/tmp/ssl_jax_shutdown_loop}; shift 2 2>/dev/null || shift $#
ROOT=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$OUT"
cat > "$OUT/tiny.py" <<'PY'
from ssl_jax import config_defaults
def get_config():
  c = config_defaults.base_config()
  c.method = "mae"
  c.model = dict(name="vit", variant="Ti", width=32, depth=1, num_heads=2, patch_size=8)
  c.mae = dict(mask_ratio=0.75, norm_pix_loss=True, decoder=dict(width=32, depth=1, num_heads=2))
  c.batch_size = 8
  c.data.max_train_examples = 64
  c.data.shuffle_buffer = 64
  c.total_steps = 3
  c.optim.warmup_steps = 1
  c.log_every = 1
  c.checkpoint_every = 2
  c.eval.protocols = ()
  return c
PY
fail=0
for i in $(seq 1 "$N"); do
  rm -rf "$OUT/w$i"
  start=$(date +%s)
  (cd "$ROOT" && JAX_PLATFORMS=cpu TF_CPP_MIN_LOG_LEVEL=2 python -m ssl_jax.main \
      --config "$OUT/tiny.py" --workdir "$OUT/w$i" "$@") > "$OUT/run$i.log" 2>&1
  rc=$?
  [ $rc -ne 0 ] && fail=$((fail + 1))
  echo "run $i rc=$rc $(( $(date +%s) - start ))s $(grep -o 'skipped_images: .*' "$OUT/run$i.log")"
done
echo "$((N - fail))/$N runs exited 0"
[ $fail -eq 0 ]
