#!/usr/bin/env bash
# session 18, device call 4: host / device / wall per call after the host-side changes (ours) against session 17's
# chunk.py (base), then the kernel tests that were left
set -uo pipefail
cd "$(dirname "$0")/../../.."
export PYTHONPATH=$PWD TRITON_INTERPRET=0 PYTHONUNBUFFERED=1
mkdir -p "$OUT"
python3 benchmarks/gdn.py --host --no-fla --base benchmarks/results/session18/chunk_s17.py --shapes olmo,qwen --bt 2x4096,8x4096 2>&1 | grep -v "^ \|Ordered\|List red\|^$\|ncalls" | tee "$OUT/host.txt"
python3 -m pytest -q -o addopts="" -p no:cacheprovider tests/kernels/test_gdn.py -k "cu_seqlens or varlen or host_helpers" 2>&1 | tail -5 | tee "$OUT/tests.txt"
cat benchmarks/results/session18/done_s17.txt benchmarks/results/session18/call1_passed.txt > /tmp/done.txt
bash benchmarks/gpu_check.sh rest /tmp/done.txt 300
