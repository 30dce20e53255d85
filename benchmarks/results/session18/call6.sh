#!/usr/bin/env bash
# session 18, device call 6: per-V-block-count settings for Qwen3-Next (two V blocks): _bwd_wy on 4 stages, its
# d(gc) prefetch, _bwd_dqk on 3 stages; each against the default in the same process, the default twice
set -uo pipefail
cd "$(dirname "$0")/../../.."
export PYTHONPATH=$PWD TRITON_INTERPRET=0 PYTHONUNBUFFERED=1
mkdir -p "$OUT"
python3 benchmarks/gdn.py --shapes qwen --bt 8x4096,1x32768 --no-fla --no-torch --no-ref \
  --sweep '[{}, {"bchunk_stages": 4}, {"pf_wy_dgp": true}, {"bchunk_stages": 4, "pf_wy_dgp": true}, {"dqk_stages": 3}, {}]' \
  2>&1 | grep -v Warn | tee "$OUT/sweep.txt"
python3 benchmarks/gdn.py --shapes qwen --bt 8x4096 --agree '[{"bchunk_stages": 4, "pf_wy_dgp": true}]' 2>&1 | grep agree | tee "$OUT/agree.txt"
