#!/usr/bin/env bash
# Session 24, call 1: `_fwd_prep64` and `_fwd_out` on split key columns (CONFIG fwd_ksplit: Olmo-Hybrid's 96 as
# 64 + 32, not one block of 128), two alternating rounds at the three table shapes; the GPU tests with it on
# (bf16 at the full Olmo-Hybrid head dims, and the split test); gdn.py --hard with it on.
set -uo pipefail
cd "$(dirname "$0")/../../.."
mkdir -p "$OUT"
source benchmarks/gpu_env.sh
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm --format=csv
C='[{}, {"fwd_ksplit": true}, {}, {"fwd_ksplit": true}]'
timeout 300 python3 benchmarks/gdn.py --sweep "$C" --shapes olmo --bt 8x4096,2x4096,1x32768 2>&1 | grep -v "^$" | tee "$OUT/sweep_ksplit.txt" | grep sweep
HPT_GDN_CONFIG='{"fwd_ksplit": true}' timeout 200 python3 -m pytest -q -o addopts="" -p no:cacheprovider tests/kernels/test_gdn.py \
  -k "split_key_forward or (chunk_matches_recurrence and K96) or no_grad_forward or groups_of_two or backward_forms" 2>&1 | tail -5 | tee "$OUT/tests.txt"
HPT_GDN_CONFIG='{"fwd_ksplit": true}' timeout 120 python3 benchmarks/gdn.py --hard --shapes olmo 2>&1 | tee "$OUT/hard_ksplit.txt" | tail -8
