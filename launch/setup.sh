#!/usr/bin/env bash
# Installs what ssl_jax needs on a fresh Debian/Ubuntu machine: the embedded
# Fashion-MNIST (Debian package dataset-fashion-mnist) and the pinned Python deps.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 || {
    $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q dataset-fashion-mnist >/dev/null; }
fi
python3 -m pip install -q --disable-pip-version-check -r requirements.txt
