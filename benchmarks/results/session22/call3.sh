#!/usr/bin/env bash
# Session 22, call 3: two backward schedules for Qwen3-Next. bstate_parts_dl: one sequence's backward in parts even
# where its state pass takes the SMs, so that each part's _bwd_dlocal overlaps the next part's state pass
# (_bwd_dqk / _bwd_wy once after it); zero_side: the grouped heads' dq / dk zeroing on a stream of its own beside
# _bwd_dlocal and the state pass. Alternating rounds, then each against the default's results.
set -uo pipefail
cd "$(dirname "$0")/../../.."
mkdir -p "$OUT"
source benchmarks/gpu_env.sh
timeout 250 python3 benchmarks/gdn.py --sweep '[{}, {"bstate_parts_dl": true}, {"zero_side": true}, {"bstate_parts_dl": true, "bstate_parts": 3}, {}, {"bstate_parts_dl": true}, {"zero_side": true}, {"bstate_parts_dl": true, "bstate_parts": 3}]' \
  --shapes qwen --bt 1x32768 2>&1 | grep sweep | tee "$OUT/sweep_1x32768.txt"
timeout 200 python3 benchmarks/gdn.py --sweep '[{}, {"zero_side": true}, {}, {"zero_side": true}]' \
  --shapes qwen --bt 8x4096,2x4096 2>&1 | grep sweep | tee "$OUT/sweep_zero.txt"
timeout 100 python3 benchmarks/gdn.py --agree '[{"bstate_parts_dl": true}, {"zero_side": true}]' --shapes qwen \
  --bt 1x32768,8x4096 2>&1 | grep agree | tee "$OUT/agree.txt"
