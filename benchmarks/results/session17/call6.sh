#!/usr/bin/env bash
# session 17, call 6: _bwd_wy's L2 prefetch of its dk part (pf_wy; pf_wy_dgp: d(gc) part too), line by line as in
# call 4: times against off, then the GPU tests of the backward paths
export PYTHONPATH=$PWD TRITON_INTERPRET=0 PYTHONUNBUFFERED=1
python3 benchmarks/gdn.py --sweep '[{"pf_wy": false}, {}, {"pf_wy_dgp": true}, {"pf_wy": false}, {}, {"pf_wy_dgp": true}]' \
  --shapes olmo,qwen --bt 8x4096,1x32768,2x4096 --no-fla --no-torch --no-ref 2>&1 | grep -v "^hpt config\|UserWarn\|_warn_once" | tee $OUT/sweep.txt
timeout 330 python3 -m pytest -q -o addopts="" -rs tests/kernels/test_gdn.py -k "not torch and (launch_settings_do_not or chunk_matches_recurrence or grouped_heads or varlen_bf16 or nearly_parallel or rounding_plus) and not float32 and not fp32" 2>&1 | tail -8 | tee $OUT/tests.txt
