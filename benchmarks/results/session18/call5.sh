#!/usr/bin/env bash
# session 18, device call 5: the two host-side tests at the GPU, then the benchmark table (with the kernels' own time)
set -uo pipefail
cd "$(dirname "$0")/../../.."
export PYTHONPATH=$PWD TRITON_INTERPRET=0 PYTHONUNBUFFERED=1
mkdir -p "$OUT"
python3 -m pytest -q -o addopts="" -p no:cacheprovider tests/kernels/test_gdn.py tests/test_bench.py -k "cu_seqlens_are or host_helpers or host_parts" 2>&1 | tail -3 | tee "$OUT/tests.txt"
bash benchmarks/gpu_check.sh table
