#!/usr/bin/env bash
# Session 20, call 1: the direct-launch path (kernels/_launch.py) on the GPU: its tests, the GDN kernel tests that
# launch most (a quick subset), and the host A/B.
set -uo pipefail
cd "$(dirname "$0")/../../.."
source benchmarks/gpu_env.sh  # (the calls ran these lines inline: the same wheel install and exports)
mkdir -p "$OUT"
timeout 200 python3 -m pytest -o addopts="" -q -rs -p no:cacheprovider tests/kernels/test_launch.py \
  tests/kernels/test_conv.py tests/kernels/test_norm.py 2>&1 | tail -15 | tee "$OUT/tests.txt"
timeout 120 python3 -m pytest -o addopts="" -q -rs -p no:cacheprovider tests/kernels/test_gdn.py \
  -k "varlen or decode or graph" 2>&1 | tail -8 | tee -a "$OUT/tests.txt"
timeout 200 python3 benchmarks/results/session20/host_ab.py 2>&1 | tee "$OUT/host_ab.txt"
