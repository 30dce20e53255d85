#!/usr/bin/env bash
# Session 20, call 9: `_bwd_dqk` / `_bwd_wy` with 1/||q|| and 1/||k|| read from the forward's buffers (bchunk_norms)
# instead of reduced from the tiles again: per-kernel A/B, two rounds alternating, one process a setting; agreement;
# its GPU test.
set -uo pipefail
cd "$(dirname "$0")/../../.."
source benchmarks/gpu_env.sh  # (the calls ran these lines inline: the same wheel install and exports)
mkdir -p "$OUT"
for cfg in '{}' '{"bchunk_norms": true}' '{}' '{"bchunk_norms": true}'; do
  timeout 90 python3 benchmarks/gdn.py --sweep "[$cfg]" --shapes olmo,qwen --bt 8x4096,1x32768 --no-fla --no-torch \
    --no-ref 2>&1 | grep '^sweep'
done | tee "$OUT/sweep.txt"
timeout 60 python3 benchmarks/gdn.py --agree '[{"bchunk_norms": true}]' --shapes olmo,qwen --bt 8x4096 --no-fla \
  --no-torch 2>&1 | grep '^agree' | tee "$OUT/agree.txt"
timeout 150 python3 -m pytest -o addopts="" -q -rs -p no:cacheprovider tests/kernels/test_gdn.py \
  -k "norms_from_buffers" 2>&1 | tail -4 | tee "$OUT/tests.txt"
