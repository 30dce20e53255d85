#!/usr/bin/env bash
# Session 24, call 5: the GPU tests of the Gluon output kernel (against the Triton `_fwd_out`, forward and backward,
# packed documents, parts, both grid orders, bf16 / fp16, three head shapes) and of the output in pairs / the
# no-grad forward with it on; then the forward / forward+backward with it on and off at 8x4096 (two rounds).
set -uo pipefail
cd "$(dirname "$0")/../../.."
mkdir -p "$OUT"
source benchmarks/gpu_env.sh
timeout 280 python3 -m pytest -q -o addopts="" -p no:cacheprovider tests/kernels/test_gdn.py --durations=8 \
  -k "gluon or groups_of_two or no_grad_forward" 2>&1 | tail -16 | tee "$OUT/tests.txt"
