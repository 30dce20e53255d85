#!/usr/bin/env bash
# Session 20, call 3: `_bwd_dqk` / `_bwd_wy` on key columns in two blocks (bchunk_ksplit: Olmo-Hybrid's 96 as
# 64 + 32, not padded to 128): per-kernel A/B, two rounds alternating, one process a setting; agreement with the
# default; its GPU test and the wy / varlen tests.
set -uo pipefail
cd "$(dirname "$0")/../../.."
source benchmarks/gpu_env.sh  # (the calls ran these lines inline: the same wheel install and exports)
mkdir -p "$OUT"
for cfg in '{}' '{"bchunk_ksplit": true}' '{}' '{"bchunk_ksplit": true}'; do
  timeout 100 python3 benchmarks/gdn.py --sweep "[$cfg]" --shapes olmo --bt 8x4096,1x32768,2x4096 --no-fla --no-torch \
    --no-ref 2>&1 | grep '^sweep'
done | tee "$OUT/sweep.txt"
timeout 60 python3 benchmarks/gdn.py --sweep '[{}]' --shapes qwen --bt 8x4096 --no-fla --no-torch --no-ref 2>&1 \
  | grep '^sweep' | tee -a "$OUT/sweep.txt"
timeout 80 python3 benchmarks/gdn.py --agree '[{"bchunk_ksplit": true}]' --shapes olmo --bt 8x4096 --no-fla --no-torch \
  2>&1 | grep -v Warn | tail -4 | tee "$OUT/agree.txt"
timeout 200 python3 -m pytest -o addopts="" -q -rs -p no:cacheprovider tests/kernels/test_gdn.py \
  -k "key_split or wy_key_products" 2>&1 | tail -6 | tee "$OUT/tests.txt"
