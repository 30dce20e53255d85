#!/usr/bin/env bash
# Session 22, call 6: T stored in fp16 for the backward (t_f16, TS in _bwd_wy): its cost at 8x4096 in alternating
# rounds, the bf16 errors on nearly parallel keys against fla and the other forms of T (hard.py t_f16), the GPU tests that
# touch T.
set -uo pipefail
cd "$(dirname "$0")/../../.."
mkdir -p "$OUT"
source benchmarks/gpu_env.sh
timeout 200 python3 benchmarks/gdn.py --sweep '[{}, {"t_f16": false}, {}, {"t_f16": false}]' --shapes olmo,qwen \
  --bt 8x4096 2>&1 | grep sweep | tee "$OUT/sweep_t16.txt"
timeout 150 python3 benchmarks/results/session22/hard.py t_f16 2>&1 | tee "$OUT/hard.txt"
timeout 200 python3 -m pytest -o addopts="" -q -rs -p no:cacheprovider tests/kernels/test_gdn.py \
  -k "t_stored_in_fp16 or rounding_plus_remainder or forms_match or nearly_parallel or no_grad_forward" 2>&1 \
  | tail -15 | tee "$OUT/tests.txt"
