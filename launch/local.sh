#!/usr/bin/env bash
# Any config on this machine (all local GPUs / CPU devices form the mesh).
# Usage: bash launch/local.sh configs/cr2pq.py:vit_small_in1k WORKDIR [--config.* overrides]
set -euo pipefail
cd "$(dirname "$0")/.."
CONFIG="$1"; WORKDIR="$2"; shift 2
export TF_CPP_MIN_LOG_LEVEL=2
python3 -m ssl_jax.main --config "$CONFIG" --workdir "$WORKDIR" "$@"
