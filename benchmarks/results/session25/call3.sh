#!/usr/bin/env bash
# Session 25, call 3: Gluon launches through the fast launch path (descriptors keyed as Triton specialises them), the
# Gluon _bwd_dqk's host cost and time at 2x4096 / 8x4096, fwd+bwd with it on and off at every table point (no fla),
# then the GPU tests of both Gluon kernels and of the fast launch path.
set -uo pipefail
cd "$(dirname "$0")/../../.."
mkdir -p "$OUT"
source benchmarks/gpu_env.sh
timeout 100 python3 benchmarks/gluon_dqk.py --shapes qwen,olmo --bt 2x4096,8x4096 2>&1 | grep "^gluon_dqk\|rror" | cut -c1-600 | tee "$OUT/dqk.txt"
timeout 120 python3 benchmarks/gdn.py --sweep '[{"dqk_gluon": false}, {}]' --shapes qwen,olmo --bt 2x4096,8x4096,1x32768 2>&1 | tee "$OUT/sweep.txt" | grep "^sweep" | cut -c1-200
timeout 330 python3 -m pytest -q -o addopts="" -p no:cacheprovider tests/kernels/test_gdn.py tests/kernels/test_launch.py -k "gluon or launch" 2>&1 | grep -v "^\s*$" | tail -25 | tee "$OUT/tests.txt"
