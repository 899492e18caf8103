#!/usr/bin/env bash
# Sets up fmdconv on a fresh machine: a virtual environment in .venv with the CPU build of
# torch 2.13.0, the package itself, and the Fashion-MNIST dataset from Debian.
# Usage: bash scripts/setup.sh [--dev]     (--dev adds the test and lint tools)
set -euo pipefail
cd "$(dirname "$0")/.."

extras=""
[ "${1:-}" = "--dev" ] && extras="[dev]"

python_bin=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python_bin" -m venv .venv
pip=(.venv/bin/python -m pip --disable-pip-version-check -q)
# torch is pinned first: a looser requirement would pull the multi-GB CUDA wheels.
.venv/bin/python -c "import torch" 2>/dev/null || "${pip[@]}" install torch==2.13.0
"${pip[@]}" install -e ".${extras}"

fashion=/usr/share/datasets/fashion-mnist
if [ ! -f "$fashion/train-images-idx3-ubyte.gz" ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq dataset-fashion-mnist
fi
echo "fmdconv is set up in $(pwd)/.venv"
