#!/usr/bin/env bash
# Session 22, call 7: bf16 errors on nearly parallel keys (hard.py main: main, and bwd_split_t) with fla (its wheels
# carried this time: call 6 ran without them). The first try ran under `timeout 200`, which fla's compiles used up;
# the second, on the warm machine, under this 420.
set -uo pipefail
cd "$(dirname "$0")/../../.."
mkdir -p "$OUT"
source benchmarks/gpu_env.sh
timeout 420 python3 benchmarks/results/session22/hard.py main 2>&1 | tee "$OUT/hard2.txt"
