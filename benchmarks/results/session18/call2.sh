#!/usr/bin/env bash
# session 18, device call 2: the host cost of the primitives (host_probe.py), and where our host time goes
# (gdn.py --host: the driver's functions timed, ours only)
set -uo pipefail
cd "$(dirname "$0")/../../.."
export PYTHONPATH=$PWD TRITON_INTERPRET=0 PYTHONUNBUFFERED=1
mkdir -p "$OUT"
python3 benchmarks/results/session18/host_probe.py 2>&1 | tee "$OUT/probe.txt"
python3 benchmarks/gdn.py --host --no-fla --shapes olmo,qwen --bt 2x4096,8x4096 2>&1 | grep -v "^ \|Ordered\|List red\|^$\|ncalls" | tee "$OUT/host.txt"
