#!/bin/bash
# Issue 12's "Done when": N short pre-training runs in a row (fresh
# interpreters, configs/mae.py:tiny: 4 steps, no eval), each must exit 0 (no abort
# at shutdown).
# Usage: bench/shutdown_loop.sh [N=20] [OUT=/tmp/ssl_jax_shutdown_loop] [extra --config.* flags]
# Prints one line per run and a tally; exits 1 if any run failed.
set -u
N=${1:-20}; OUT=${2:-/tmp/ssl_jax_shutdown_loop}; shift 2 2>/dev/null || shift $#
ROOT=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$OUT"
fail=0
for i in $(seq 1 "$N"); do
  rm -rf "$OUT/w$i"
  start=$(date +%s)
  (cd "$ROOT" && JAX_PLATFORMS=cpu TF_CPP_MIN_LOG_LEVEL=2 python -m ssl_jax.main \
      --config configs/mae.py:tiny --workdir "$OUT/w$i" "$@") > "$OUT/run$i.log" 2>&1
  rc=$?
  [ $rc -ne 0 ] && fail=$((fail + 1))
  echo "run $i rc=$rc $(( $(date +%s) - start ))s $(grep -o 'skipped_images: .*' "$OUT/run$i.log")"
done
echo "$((N - fail))/$N runs exited 0"
[ $fail -eq 0 ]
