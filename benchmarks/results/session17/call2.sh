#!/usr/bin/env bash
# session 17, call 2: the forward of several sequences in groups (seq_groups), each group's state pass on the side
# stream beside the other groups' prep / output: times (fwd, fwd+bwd, per kernel), agreement, GPU tests
export PYTHONPATH=$PWD TRITON_INTERPRET=0 PYTHONUNBUFFERED=1
python3 benchmarks/gdn.py --sweep '[{"seq_groups": 1}, {"seq_groups": 2}, {"seq_groups": 4}, {"seq_groups": 1}, {"seq_groups": 2}, {"seq_groups": 3}, {"seq_groups": 2, "state_parts_priority": 0}]' \
  --shapes olmo,qwen --bt 8x4096,2x4096 --no-fla --no-torch --no-ref 2>&1 | grep -v "^hpt config\|UserWarn\|_warn_once" | tee $OUT/sweep.txt
python3 benchmarks/gdn.py --agree '[{"seq_groups": 1}, {"seq_groups": 4}]' --shapes olmo,qwen --bt 8x4096 2>&1 | tee $OUT/agree.txt
python3 -m pytest -q -o addopts="" -rs tests/kernels/test_gdn.py -k "not torch and (varlen or packed or groups or state)" 2>&1 | tail -8 | tee $OUT/tests.txt
