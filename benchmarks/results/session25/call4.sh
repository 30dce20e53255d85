#!/usr/bin/env bash
# Session 25, call 4: the Gluon _bwd_wy (hybrid_posttrain/kernels/gdn/wy_gluon.py), first run: against the Triton
# kernel on recorded arguments (benchmarks/gluon_bwd.py --kernel wy), its GPU tests, fwd+bwd with it on and off.
set -uo pipefail
cd "$(dirname "$0")/../../.."
mkdir -p "$OUT"
source benchmarks/gpu_env.sh
timeout 120 python3 benchmarks/gluon_bwd.py --kernel wy --shapes qwen,olmo --bt 8x4096 --warps 4,4:0:1,8:0:2 2>&1 | grep "^gluon_wy\|rror" | cut -c1-900 | tee "$OUT/wy.txt"
timeout 100 python3 benchmarks/gdn.py --sweep '[{"wy_gluon": false}, {}]' --shapes qwen,olmo --bt 8x4096,1x32768 2>&1 | tee "$OUT/sweep.txt" | grep "^sweep" | cut -c1-220
timeout 300 python3 -m pytest -q -o addopts="" -p no:cacheprovider tests/kernels/test_gdn.py -k "gluon_bwd and wy" 2>&1 | grep -v "^\s*$" | tail -12 | cut -c1-600 | tee "$OUT/tests.txt"
