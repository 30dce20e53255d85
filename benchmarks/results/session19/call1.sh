#!/usr/bin/env bash
# session 19, device call 1: `_bwd_dqk` and `_bwd_wy` as the two parts of one program (`_bwd_chunk`, bchunk_seq),
# with and without the L2 prefetch of its second part's tiles (bchunk_seq_pf), against the default, both shapes;
# bit-identical check; the GPU tests of the new settings
set -uo pipefail
cd "$(dirname "$0")/../../.."
export PYTHONPATH=$PWD TRITON_INTERPRET=0 PYTHONUNBUFFERED=1
mkdir -p "$OUT"
python3 benchmarks/gdn.py --shapes olmo,qwen --bt 8x4096,1x32768 --no-fla --no-torch --no-ref \
  --sweep '[{}, {"bchunk_seq": true}, {"bchunk_seq": true, "bchunk_seq_pf": true}, {}, {"bchunk_seq": true}]' \
  2>&1 | grep -v Warn | tee "$OUT/sweep.txt"
python3 benchmarks/gdn.py --shapes olmo,qwen --bt 8x4096 --agree '[{"bchunk_seq": true}, {"bchunk_seq": true, "bchunk_seq_pf": true}]' 2>&1 | grep agree | tee "$OUT/agree.txt"
timeout 200 python3 -m pytest -q -o addopts="" -x tests/kernels/test_gdn.py -k "bchunk_seq" 2>&1 | tail -5 | tee "$OUT/tests.txt"
