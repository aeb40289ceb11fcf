#!/usr/bin/env bash
# Cloud TPU pod: the same command on every host; jax.distributed.initialize()
# (SSL_JAX_DISTRIBUTED=1, ssl_jax/distributed.py) joins the hosts, each reads
# its own input shard; process 0 logs, exports and evaluates. Pass e.g.
# --config.data.input_shards=64 to keep the data order if the job may resume
# on another slice size (tested on localhost: tests/test_multihost.py).
# Usage: bash launch/tpu_pod.sh TPU_NAME ZONE CONFIG gs://BUCKET/WORKDIR [--config.* overrides]
# ImageNet must be readable from every host (a tfds data_dir in GCS, or a
# manual_dir on each host's disk), e.g. --config.data.data_dir=gs://BUCKET/tfds
set -euo pipefail
TPU="$1"; ZONE="$2"; CONFIG="$3"; WORKDIR="$4"; shift 4
REPO="${SSL_JAX_REPO:-https://github.com/ssl-jax/ssl_jax.git}"
gcloud compute tpus tpu-vm ssh "$TPU" --zone "$ZONE" --worker=all --command "
  set -e
  [ -d ssl_jax ] || git clone $REPO ssl_jax
  cd ssl_jax && git pull -q
  python3 -m pip install -q -r requirements.txt 'jax[tpu]==0.10.2' \
      -f https://storage.googleapis.com/jax-releases/libtpu_releases.html
  SSL_JAX_DISTRIBUTED=1 TF_CPP_MIN_LOG_LEVEL=2 python3 -m ssl_jax.main \
      --config $CONFIG --workdir $WORKDIR $*
"
