#!/usr/bin/env bash
# Session 23, call 6: `_bwd_dqk_ks` (dqk_ks.patch): `_bwd_dqk` on half the key columns a program, so that its [64, K]
# accumulators halve (dq's L2-norm backward and the q side of d(gc) from do . o, the forward's output; the other
# d(gc) parts of the halves added atomically). Offline (sm_90): 8 warps 188 registers (one program an SM), with a
# 128-register cap two an SM and 120-136 B of stack, 4 warps 255 registers and 136-160 B. Alternating rounds against
# main's `_bwd_dqk` at 8x4096, then 1x32768; then its results against main's.
# Needs dqk_ks.patch applied to main at 4465159: git apply benchmarks/results/session23/dqk_ks.patch
set -uo pipefail
cd "$(dirname "$0")/../../.."
mkdir -p "$OUT"
source benchmarks/gpu_env.sh
C='[{}, {"dqk_ks": true}, {"dqk_ks": true, "dqk_ks_maxnreg": 128}, {"dqk_ks": true, "dqk_ks_warps": 4}, {"dqk_ks": true, "dqk_ks_stages": 3}, {}, {"dqk_ks": true}, {"dqk_ks": true, "dqk_ks_maxnreg": 128}]'
timeout 330 python3 benchmarks/gdn.py --sweep "$C" --shapes qwen,olmo --bt 8x4096 2>&1 | grep sweep | tee "$OUT/sweep_8x4096.txt"
timeout 150 python3 benchmarks/gdn.py --sweep '[{}, {"dqk_ks": true}, {"dqk_ks": true, "dqk_ks_maxnreg": 128}]' --shapes qwen,olmo --bt 1x32768 2>&1 | grep sweep | tee "$OUT/sweep_1x32768.txt"
timeout 90 python3 benchmarks/gdn.py --agree '[{"dqk_ks": true}, {"dqk_ks": true, "dqk_ks_maxnreg": 128}]' --shapes qwen,olmo --bt 8x4096 2>&1 | grep agree | tee "$OUT/agree.txt"
