#!/usr/bin/env bash
# session 19, device call 6 (H100): what each part of `_bwd_dqk` / `_bwd_wy`'s work costs, by leaving it out (TIMING
# ONLY: the results are wrong). leaveout.patch gives chunk.py CONFIG x_leave, a bitmask:
# 1 dgl (sum of h * dh in dqk's V loop), 2 dq's L2-norm backward, 4 dk's L2-norm backward, 8 M = do delta^T in
# dqk's loop, 16 Mv = ddelta v^T in wy's loop
set -uo pipefail
cd "$(dirname "$0")/../../.."
git apply benchmarks/results/session19/leaveout.patch  # the device works on a copy of the tree
export PYTHONPATH=$PWD TRITON_INTERPRET=0 PYTHONUNBUFFERED=1
mkdir -p "$OUT"
python3 benchmarks/gdn.py --shapes olmo,qwen --bt 8x4096 --no-fla --no-torch --no-ref \
  --sweep '[{}, {"x_leave": 1}, {"x_leave": 2}, {"x_leave": 4}, {"x_leave": 8}, {"x_leave": 16}, {"x_leave": 7}, {}]' \
  2>&1 | grep -v Warn | grep -v "hpt config" | tee "$OUT/sweep.txt"
