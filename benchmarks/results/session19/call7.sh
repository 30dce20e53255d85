#!/usr/bin/env bash
# session 19, device call 7 (H100): the L2 norms' backward from row sums the kernels form anyway (l2_identity) and
# sum(h * dh) as a trace (dgl_mma), each against the direct forms, the default twice; how far their results move
# from the direct forms'; the GPU tests of the new paths and of what they touch
set -uo pipefail
cd "$(dirname "$0")/../../.."
export PYTHONPATH=$PWD TRITON_INTERPRET=0 PYTHONUNBUFFERED=1
mkdir -p "$OUT"
python3 benchmarks/gdn.py --shapes olmo,qwen --bt 8x4096,1x32768 --no-fla --no-torch --no-ref \
  --sweep '[{}, {"l2_identity": false, "dgl_mma": false}, {"dgl_mma": false}, {"l2_identity": false}, {}]' \
  2>&1 | grep -v Warn | grep -v "hpt config" | tee "$OUT/sweep.txt"
python3 benchmarks/gdn.py --shapes olmo,qwen --bt 8x4096 --agree '[{"l2_identity": false, "dgl_mma": false}, {"dgl_mma": false}, {"l2_identity": false}]' 2>&1 | grep agree | tee "$OUT/agree.txt"
timeout 330 python3 -m pytest -q -o addopts="" -rs tests/kernels/test_gdn.py \
  -k "row_sums or (matches_recurrence and bfloat16 and hpt) or nearly_parallel or varlen_bf16 or fp32_is_not or grouped_heads or key_dims_over_128 or split_key_backward or rounding_plus_remainder or gate_gradients" \
  2>&1 | tail -15 | tee "$OUT/tests.txt"
