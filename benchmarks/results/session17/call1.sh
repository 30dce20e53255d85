#!/usr/bin/env bash
# session 17, call 1: the forward's output on groups of four chunks (QUAD) against pairs: no-grad forward times,
# agreement with the pairs' results, and the GPU tests of the output groups
export PYTHONPATH=$PWD TRITON_INTERPRET=0 PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader
python3 benchmarks/gdn.py --sweep '[{"out_quad": false}, {}, {"out_quad_hdot": false}, {"out_quad_bv": 64}, {"out_quad_bv": 16}, {"out_quad": false}, {}]' \
  --fwd-only --shapes olmo,qwen --bt 8x4096,1x32768,2x4096 --no-fla --no-torch --no-ref 2>&1 | grep -v "^hpt config" | tee $OUT/sweep.txt
python3 benchmarks/gdn.py --agree '[{"out_quad": false}, {"out_quad_hdot": false}]' --shapes olmo,qwen --bt 2x4096,1x32768 2>&1 | tee $OUT/agree.txt
python3 -m pytest -q -o addopts="" -rs tests/kernels/test_gdn.py -k "groups_of_two or pairs_only" 2>&1 | tail -15 | tee $OUT/tests.txt
