#!/usr/bin/env bash
# Session 25: the issue's table for one shape (olmo) with every Gluon kernel at its rule, fla carried (its Hopper guard
# patched out in the benchmark's process).
set -uo pipefail
cd "$(dirname "$0")/../../.."
mkdir -p "$OUT"
source benchmarks/gpu_env.sh
timeout 560 python3 benchmarks/gdn.py --no-torch --shapes olmo --json "$OUT/table_olmo.json" 2>&1 | tee "$OUT/table_olmo.txt" | grep "^| "
