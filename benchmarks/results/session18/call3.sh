#!/usr/bin/env bash
# session 18, device call 3: the host cost of each of our launches (host_probe2.py)
set -uo pipefail
cd "$(dirname "$0")/../../.."
export PYTHONPATH=$PWD TRITON_INTERPRET=0 PYTHONUNBUFFERED=1
mkdir -p "$OUT"
python3 benchmarks/results/session18/host_probe2.py 2>&1 | tee "$OUT/probe2.txt"
