#!/usr/bin/env bash
# session 17, call 3: L2 prefetch of the next wave's tiles in the per-chunk kernels (pf_*): times, agreement, tests
export PYTHONPATH=$PWD TRITON_INTERPRET=0 PYTHONUNBUFFERED=1
OFF='"pf_fwd_prep64": 0, "pf_fwd_out": 0, "pf_bwd_dqk": 0, "pf_bwd_wy": 0'
python3 benchmarks/gdn.py --sweep "[{$OFF}, {}, {\"pf_fwd_prep64\": 0, \"pf_fwd_out\": 0}, {\"pf_bwd_dqk\": 0, \"pf_bwd_wy\": 0}, {\"pf_fwd_prep64\": 6, \"pf_fwd_out\": 4, \"pf_bwd_dqk\": 2, \"pf_bwd_wy\": 2}, {$OFF}, {}]" \
  --shapes olmo,qwen --bt 8x4096,1x32768,2x4096 --no-fla --no-torch --no-ref 2>&1 | grep -v "^hpt config\|UserWarn\|_warn_once" | tee $OUT/sweep.txt
python3 benchmarks/gdn.py --agree "[{$OFF}]" --shapes olmo,qwen --bt 8x4096,1x32768 2>&1 | tee $OUT/agree.txt
python3 -m pytest -q -o addopts="" -rs tests/kernels/test_gdn.py -k "not torch and (grouped or varlen or groups or full)" 2>&1 | tail -8 | tee $OUT/tests.txt
