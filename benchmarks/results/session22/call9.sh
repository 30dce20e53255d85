#!/usr/bin/env bash
# Session 22, calls 9-10: the benchmark table on main (no kernel change since session 21), one head shape a call
# (gdn.py --no-torch --shapes S, as gpu_check.sh table runs it), fla carried. Usage: call9.sh olmo|qwen
set -uo pipefail
cd "$(dirname "$0")/../../.."
mkdir -p "$OUT"
source benchmarks/gpu_env.sh
timeout 560 python3 benchmarks/gdn.py --no-torch --shapes "$1" --json "$OUT/table_$1.json" 2>&1 | tee "$OUT/table_$1.txt"
