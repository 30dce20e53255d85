#!/usr/bin/env bash
# session 18, device call 7: the decode step's host time (decode_host.py), host / device / wall at 2x4096 against
# session 17's chunk.py, then the GPU tests of what this session changed
set -uo pipefail
cd "$(dirname "$0")/../../.."
export PYTHONPATH=$PWD TRITON_INTERPRET=0 PYTHONUNBUFFERED=1
mkdir -p "$OUT"
python3 benchmarks/results/session18/decode_host.py 2>&1 | grep -v Warn | tee "$OUT/decode.txt"
python3 benchmarks/gdn.py --host --no-fla --base benchmarks/results/session18/chunk_s17.py --shapes olmo,qwen --bt 2x4096 2>&1 | grep -v "^ \|Ordered\|List red\|^$\|ncalls\|Warn" | tee "$OUT/host.txt"
timeout 330 python3 -m pytest -o addopts="" -v -p no:cacheprovider tests/kernels/test_gdn.py tests/test_bench.py \
  -k "launch_settings_do_not or decode or wy_stages or gate_gradients or cu_seqlens_are or host_helpers or host_parts or (chunk_matches_recurrence and bfloat16 and HV4)" 2>&1 | tee "$OUT/tests.txt" | grep -E "PASSED|FAILED|ERROR|passed|failed" | tail -40
