#!/usr/bin/env bash
# Session 22, call 7: bf16 errors on nearly parallel keys (hard2.py: main, and bwd_split_t) with fla (its wheels
# carried this time: call 6 ran without them).
set -uo pipefail
cd "$(dirname "$0")/../../.."
mkdir -p "$OUT"
source benchmarks/gpu_env.sh
timeout 200 python3 benchmarks/results/session22/hard2.py 2>&1 | tee "$OUT/hard2.txt"
