#!/usr/bin/env bash
# Installs gan_jax and trains the embedded default (README command 1):
#   bash launch/local.sh [WORKDIR] [--config.KEY=VALUE ...]
# Needs Debian's dataset-fashion-mnist; installs it when missing and we are root, otherwise stops
# with the exact command to run.
set -euo pipefail
cd "$(dirname "$0")/.."
workdir="${1:-runs/fashion_mnist}"
shift || true
if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist
  else
    echo "Fashion-MNIST is missing. Install it with:" >&2
    echo "  sudo apt-get update && sudo apt-get install -y dataset-fashion-mnist" >&2
    exit 1
  fi
fi
python -m pip install --quiet -e .
exec python -m gan_jax.main --config experiments/fashion_mnist.py --workdir "$workdir" "$@"
