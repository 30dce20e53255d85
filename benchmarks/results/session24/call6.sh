#!/usr/bin/env bash
# Session 24, call 6: the Gluon output kernel on exact key blocks (Olmo-Hybrid's 96 as 64 + 32: no padded column read
# or multiplied; one (h, delta) slot where two would not fit two programs an SM) against the Triton `_fwd_out`, both
# shapes, 4 warps and 8 capped at 128 registers; its GPU tests; the forward / forward+backward with it on and off.
set -uo pipefail
cd "$(dirname "$0")/../../.."
mkdir -p "$OUT"
source benchmarks/gpu_env.sh
timeout 150 python3 benchmarks/gluon_out.py --shapes qwen,olmo --bt 8x4096,2x4096,1x32768 --warps 4,8:128 2>&1 | cut -c1-600 | tee "$OUT/gluon_out.txt"
timeout 150 python3 -m pytest -q -o addopts="" -p no:cacheprovider tests/kernels/test_gdn.py -k "gluon" 2>&1 | tail -4 | tee "$OUT/tests.txt"
C='[{"out_gluon": false}, {}, {"out_gluon": false}, {}]'
timeout 200 python3 benchmarks/gdn.py --sweep "$C" --shapes olmo,qwen --bt 8x4096 2>&1 | grep -v "^$" | tee "$OUT/sweep.txt" | grep "sweep" | cut -c1-200
