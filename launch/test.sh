#!/usr/bin/env bash
# Install, then run the whole test suite (CPU; 8 simulated devices for sharding tests).
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/setup.sh
export TF_CPP_MIN_LOG_LEVEL=2
python3 -m pytest tests -q -p no:cacheprovider
