#!/usr/bin/env bash
# session 17, call 4: per-chunk kernels prefetching into L2 the tiles they read late (their own: the prep's v, the
# output's h and delta, _bwd_wy's dk part): times per switch, agreement
export PYTHONPATH=$PWD TRITON_INTERPRET=0 PYTHONUNBUFFERED=1
OFF='"pf_prep": false, "pf_out": false, "pf_wy": false'
python3 benchmarks/gdn.py --sweep "[{$OFF}, {}, {\"pf_out\": false, \"pf_wy\": false}, {\"pf_prep\": false, \"pf_wy\": false}, {\"pf_prep\": false, \"pf_out\": false}, {$OFF}, {}]" \
  --shapes olmo,qwen --bt 8x4096,1x32768,2x4096 --no-fla --no-torch --no-ref 2>&1 | grep -v "^hpt config\|UserWarn\|_warn_once" | tee $OUT/sweep.txt
python3 benchmarks/gdn.py --agree "[{$OFF}]" --shapes olmo,qwen --bt 8x4096 2>&1 | tee $OUT/agree.txt
