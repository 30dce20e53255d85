#!/usr/bin/env bash
# session 18, device call 11: the decode tests, incl. a decode step captured in a CUDA graph
set -uo pipefail
cd "$(dirname "$0")/../../.."
export PYTHONPATH=$PWD TRITON_INTERPRET=0 PYTHONUNBUFFERED=1
mkdir -p "$OUT"
python3 -m pytest -o addopts="" -v -p no:cacheprovider tests/kernels/test_gdn.py -k "decode or fused_recurrent" 2>&1 | tee "$OUT/tests.txt" | grep -E "PASSED|FAILED|ERROR|passed|failed|^E " | tail -30
