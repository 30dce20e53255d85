#!/usr/bin/env bash
# Session 25, call 8: after the review's refactor (the backward's Gluon kernels share their row stores and the L2
# backward's row sums; host rules shared): both kernels against the Triton ones on recorded arguments, their GPU tests
# in bf16, and the fast launch path's.
set -uo pipefail
cd "$(dirname "$0")/../../.."
mkdir -p "$OUT"
source benchmarks/gpu_env.sh
for k in dqk wy; do timeout 70 python3 benchmarks/gluon_bwd.py --kernel $k --shapes qwen,olmo --bt 8x4096 2>&1 | grep "^gluon_\|rror" | cut -c1-600 | tee -a "$OUT/compare.txt"; done
timeout 400 python3 -m pytest -q -o addopts="" -p no:cacheprovider tests/kernels/test_gdn.py tests/kernels/test_launch.py -k "(gluon_bwd and bf16) or bit_identical" 2>&1 | grep -v "^\s*$" | tail -12 | cut -c1-600 | tee "$OUT/tests.txt"
