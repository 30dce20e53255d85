#!/usr/bin/env bash
# Session 22, call 1: the state pass building u (CONFIG fuse_u, the new default) against the prep's u buffer
# (fuse_u off), in alternating rounds at every table shape (sweep), then the results of the two against each other.
set -uo pipefail
cd "$(dirname "$0")/../../.."
mkdir -p "$OUT"
source benchmarks/gpu_env.sh
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 420 python3 benchmarks/gdn.py --sweep '[{"fuse_u": false}, {}, {"fuse_u": false}, {}]' --shapes olmo,qwen \
  --bt 8x4096,1x32768,2x4096 2>&1 | tee "$OUT/sweep.txt"
timeout 120 python3 benchmarks/gdn.py --agree '[{"fuse_u": false}]' --shapes olmo,qwen --bt 8x4096,1x32768 2>&1 \
  | tee "$OUT/agree.txt"
