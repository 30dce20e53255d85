#!/usr/bin/env bash
# Session 24, call 4: the Gluon output kernel on 64-column tiles (k's tiles reused as the second (h, delta) slot):
# against the Triton `_fwd_out` on one forward's buffers, 4 warps, 8 warps, 8 warps capped at 128 registers (two
# programs an SM); then the GPU tests of the output in pairs, packed documents and the no-grad forward.
set -uo pipefail
cd "$(dirname "$0")/../../.."
mkdir -p "$OUT"
source benchmarks/gpu_env.sh
timeout 200 python3 benchmarks/gluon_out.py --shapes qwen,olmo --bt 8x4096,2x4096,1x32768 --warps 4,8,8:128 2>&1 | cut -c1-600 | tee "$OUT/gluon_out.txt"
timeout 200 python3 -m pytest -q -o addopts="" -p no:cacheprovider tests/kernels/test_gdn.py \
  -k "groups_of_two or varlen or no_grad_forward or nearly_parallel or strong_decay" 2>&1 | tail -6 | tee "$OUT/tests.txt"
