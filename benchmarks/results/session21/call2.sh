#!/usr/bin/env bash
# Session 21, call 2: call 1's time limit (400 s for the table) cut the Qwen3-Next half of the table and its 170 s cut
# the tests on a fresh machine (compiles): the Qwen3-Next table (gdn.py as gpu_check.sh table runs it), then the tests.
set -uo pipefail
cd "$(dirname "$0")/../../.."
mkdir -p "$OUT"
source benchmarks/gpu_env.sh
timeout 300 python3 benchmarks/gdn.py --no-torch --shapes qwen --json "$OUT/table_qwen.json" 2>&1 | tee "$OUT/table_qwen.txt"
timeout 270 python3 -m pytest -o addopts="" -q -rs -p no:cacheprovider tests/kernels/test_launch.py \
  "tests/kernels/test_gdn.py::test_backward_forms_match_reference_and_each_other" 2>&1 | tail -8 | tee "$OUT/tests.txt"
