#!/usr/bin/env bash
# Session 24, call 2: the Gluon prototype of the forward's output kernel (benchmarks/gluon_out.py) against our Triton
# `_fwd_out` on the same saved buffers, Qwen3-Next at the three table shapes: 1 or 2 buffers of h / delta, 4 or 8
# warps, and 8 warps capped at 128 registers (two programs an SM); two do_bench medians each. One process a variant
# (an illegal address would end the others).
set -uo pipefail
cd "$(dirname "$0")/../../.."
mkdir -p "$OUT"
source benchmarks/gpu_env.sh
for v in "--nbuf 1 --warps 4" "--nbuf 1 --warps 8" "--nbuf 2 --warps 8" "--nbuf 2 --warps 4" "--nbuf 1 --warps 8 --variants 1:8:128"; do
  timeout 150 python3 benchmarks/gluon_out.py --shapes qwen --bt 8x4096,2x4096,1x32768 $v 2>&1 | grep -v "^$" | cut -c1-700 | tee -a "$OUT/gluon_out.txt"
done
