#!/usr/bin/env bash
# Session 21, call 1: the benchmark table on main (bchunk_norms and the direct launches), then the GPU tests that
# session 20 did not get to run: tests/kernels/test_launch.py (after its review) and the both-forms test.
set -uo pipefail
cd "$(dirname "$0")/../../.."
mkdir -p "$OUT"
OUT="$OUT" timeout 400 bash benchmarks/gpu_check.sh table
source benchmarks/gpu_env.sh
timeout 170 python3 -m pytest -o addopts="" -q -rs -p no:cacheprovider tests/kernels/test_launch.py \
  "tests/kernels/test_gdn.py::test_backward_forms_match_reference_and_each_other" 2>&1 | tail -8 | tee "$OUT/tests.txt"
