#!/usr/bin/env bash
# Install, then run the whole test suite (CPU; 8 simulated devices for sharding tests).
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/setup.sh
export TF_CPP_MIN_LOG_LEVEL=2
# Two worker processes, each test file on one of them (module fixtures are shared
# within a file); most of the suite's CPU time is single-threaded XLA compiling.
python3 -m pytest tests -q -p no:cacheprovider -n 2 --dist loadfile
