#!/usr/bin/env bash
# session 19, device call 9 (H100): `_bwd_wy` with dk's two products with k through A as one product of their summed
# left sides (wy_sum_dk, offline: SASS 2456 -> 2304 instructions, 69 -> 55 barriers, 40 -> 32 wgmma at Olmo-Hybrid)
# against the two products, alternating twice; how far results move; the GPU tests of both forms and of the chunk path
set -uo pipefail
cd "$(dirname "$0")/../../.."
export PYTHONPATH=$PWD TRITON_INTERPRET=0 PYTHONUNBUFFERED=1
mkdir -p "$OUT"
python3 benchmarks/gdn.py --shapes olmo,qwen --bt 8x4096,1x32768 --no-fla --no-torch --no-ref \
  --sweep '[{"wy_sum_dk": false}, {}, {"wy_sum_dk": false}, {}]' \
  2>&1 | grep -v Warn | grep -v "hpt config" | tee "$OUT/sweep.txt"
python3 benchmarks/gdn.py --shapes olmo,qwen --bt 8x4096 --agree '[{"wy_sum_dk": false}]' 2>&1 | grep agree | tee "$OUT/agree.txt"
timeout 220 python3 -m pytest -q -o addopts="" -rf tests/kernels/test_gdn.py \
  -k "wy_key_products or (matches_recurrence and bfloat16 and hpt) or nearly_parallel or varlen_bf16 or grouped_heads" \
  2>&1 | tail -8 | tee "$OUT/tests.txt"
