#!/usr/bin/env bash
# Session 22, call 2 (fuse_u dropped after call 1): launch settings for the unmet targets, alternating rounds.
# Olmo-Hybrid 8x4096 forward: the output kernel's V block and stages. 2x4096 forward+backward: the state passes on
# V blocks of 32 (twice the programs, half the work a step).
set -uo pipefail
cd "$(dirname "$0")/../../.."
mkdir -p "$OUT"
source benchmarks/gpu_env.sh
timeout 200 python3 benchmarks/gdn.py --fwd-only --sweep '[{}, {"out_bv": 32}, {"out_stages": 3}, {"out_bv": 32, "out_stages": 3}, {}, {"out_bv": 32}, {"out_stages": 3}]' \
  --shapes olmo --bt 8x4096 2>&1 | grep sweep | tee "$OUT/sweep_out.txt"
timeout 330 python3 benchmarks/gdn.py --sweep '[{}, {"state_bv": 32}, {"bstate_bv": 32}, {"state_bv": 32, "bstate_bv": 32}, {}, {"state_bv": 32}, {"bstate_bv": 32}, {"state_bv": 32, "bstate_bv": 32}]' \
  --shapes olmo,qwen --bt 2x4096 2>&1 | grep sweep | tee "$OUT/sweep_2x4096.txt"
