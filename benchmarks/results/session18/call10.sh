#!/usr/bin/env bash
# session 18, device call 10: gdn.py's profiler paths after the review (--sweep: kernel_times; --host: busy_ms)
set -uo pipefail
cd "$(dirname "$0")/../../.."
export PYTHONPATH=$PWD TRITON_INTERPRET=0 PYTHONUNBUFFERED=1
mkdir -p "$OUT"
python3 benchmarks/gdn.py --shapes qwen --bt 2x4096 --no-fla --no-torch --no-ref --sweep '[{}]' 2>&1 | grep -v Warn | tee "$OUT/sweep.txt"
python3 benchmarks/gdn.py --host --no-fla --shapes qwen --bt 2x4096 2>&1 | grep "^|\|host parts" | tee "$OUT/host.txt"
