#!/usr/bin/env bash
# session 18, device call 9: host ms a call, this session's chunk.py against session 17's, alternating (host_ab.py)
set -uo pipefail
cd "$(dirname "$0")/../../.."
export PYTHONPATH=$PWD TRITON_INTERPRET=0 PYTHONUNBUFFERED=1
mkdir -p "$OUT"
python3 benchmarks/results/session18/host_ab.py 2>&1 | grep -v Warn | tee "$OUT/host_ab.txt"
