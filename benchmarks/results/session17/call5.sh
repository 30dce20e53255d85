#!/usr/bin/env bash
# session 17, call 5: the same L2 prefetch as call 4, as one bulk prefetch (cp.async.bulk.prefetch.L2) a row or a
# contiguous state tile instead of one instruction a 128-byte line, per kernel: times, agreement
export PYTHONPATH=$PWD TRITON_INTERPRET=0 PYTHONUNBUFFERED=1
OFF='"pf_prep": false, "pf_out": false, "pf_dqk": false, "pf_wy": false'
python3 benchmarks/gdn.py --sweep "[{$OFF}, {$OFF, \"pf_wy\": true}, {$OFF, \"pf_wy\": true, \"pf_dqk\": true}, {$OFF, \"pf_wy\": true, \"pf_prep\": true}, {$OFF, \"pf_wy\": true, \"pf_out\": true}, {$OFF}, {$OFF, \"pf_wy\": true, \"pf_dqk\": true}]" \
  --shapes olmo,qwen --bt 8x4096,1x32768,2x4096 --no-fla --no-torch --no-ref 2>&1 | grep -v "^hpt config\|UserWarn\|_warn_once" | tee $OUT/sweep.txt
python3 benchmarks/gdn.py --agree "[{$OFF}]" --shapes olmo,qwen --bt 8x4096 2>&1 | tee $OUT/agree.txt
