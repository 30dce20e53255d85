#!/usr/bin/env bash
# Session 22, call 5: the forward of several sequences in groups of whole sequences (state_groups), each group's
# state pass on the side stream beside the other groups' prep / output kernels. Alternating rounds at 8x4096, then the
# results against the default's.
set -uo pipefail
cd "$(dirname "$0")/../../.."
mkdir -p "$OUT"
source benchmarks/gpu_env.sh
timeout 330 python3 benchmarks/gdn.py --sweep '[{}, {"state_groups": 2}, {"state_groups": 4}, {"state_groups": 8}, {}, {"state_groups": 2}, {"state_groups": 4}, {"state_groups": 8}]' \
  --shapes olmo,qwen --bt 8x4096 2>&1 | grep sweep | tee "$OUT/sweep_groups.txt"
timeout 100 python3 benchmarks/gdn.py --agree '[{"state_groups": 2}, {"state_groups": 8}]' --shapes olmo,qwen \
  --bt 8x4096 2>&1 | grep agree | tee "$OUT/agree.txt"
