#!/usr/bin/env bash
# Session 22, call 4: what the forward prep's time goes to (Olmo-Hybrid 8x4096 and Qwen3-Next 8x4096, no-grad forward):
# without T's split into two operands (prep_split_t: half the w / u products), with the inverse's last levels on
# TF32 (inv_f16 off), and its launch (no register cap; 8 warps). Alternating rounds.
set -uo pipefail
cd "$(dirname "$0")/../../.."
mkdir -p "$OUT"
source benchmarks/gpu_env.sh
timeout 400 python3 benchmarks/gdn.py --fwd-only --sweep '[{}, {"prep_split_t": false}, {"inv_f16": false}, {"prep64_maxnreg": 0}, {"prep64_warps": 8}, {}, {"prep_split_t": false}, {"inv_f16": false}]' \
  --shapes olmo,qwen --bt 8x4096 2>&1 | grep sweep | tee "$OUT/sweep_prep.txt"
