#!/usr/bin/env bash
# The default job: install, pre-train MAE ViT-Tiny on the embedded Fashion-MNIST,
# then kNN + linear probe of the pre-trained and of a random-init encoder.
# Usage: bash launch/quickstart.sh [WORKDIR] [extra --config.* flags]
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/setup.sh
WORKDIR="${1:-workdirs/mae_vit_tiny}"; shift || true
export TF_CPP_MIN_LOG_LEVEL=2
python3 -m ssl_jax.main --config configs/mae.py:vit_tiny --workdir "$WORKDIR" "$@"
