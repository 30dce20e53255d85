#!/usr/bin/env bash
# session 19, device call 5 (H200): per-kernel times of the default at both shapes (to set against the H100's of
# call 1: which kernels gain from the H200's faster memory), then the GPU kernel tests calls 3-4 did not reach
set -uo pipefail
cd "$(dirname "$0")/../../.."
export PYTHONPATH=$PWD TRITON_INTERPRET=0 PYTHONUNBUFFERED=1
mkdir -p "$OUT"
python3 benchmarks/gdn.py --shapes olmo,qwen --bt 2x4096,8x4096,1x32768 --no-fla --no-torch --no-ref \
  --sweep '[{}]' 2>&1 | grep -v Warn | tee "$OUT/sweep.txt"
cat benchmarks/results/session19/call3_passed.txt benchmarks/results/session19/call4_passed.txt > /tmp/done.txt
bash benchmarks/gpu_check.sh rest /tmp/done.txt 300 | grep -E "PASSED|FAILED|ERROR|passed|failed|not yet" | tee "$OUT/tests.txt"
