#!/usr/bin/env bash
# The GPU benchmark in one call, from the checkout: benchmarks/gpu.sh OUT_DIR [--quick]
# Needs torch with CUDA (Triton for the "triton" formulation), numpy; no network, no installs.
# Writes OUT_DIR/gpu.json and OUT_DIR/gpu.md after every row; stops starting rows after 240 s.
set -euo pipefail
out="${1:?usage: benchmarks/gpu.sh OUT_DIR [--quick]}"
shift
cd "$(dirname "$0")/.."
PYTHONPATH=src exec "${PYTHON:-python3}" -m fmdconv.cli bench --gpu --out "$out" "$@"
