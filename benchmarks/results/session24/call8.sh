#!/usr/bin/env bash
# Session 24, call 8: the benchmark table with the Gluon output kernel where a launch has at least out_gluon_min (20)
# programs an SM: Qwen3-Next at the three shapes, then Olmo-Hybrid at 2x4096 (where call 7's table, Gluon at every
# launch, read the host's extra time), fla carried.
set -uo pipefail
cd "$(dirname "$0")/../../.."
mkdir -p "$OUT"
source benchmarks/gpu_env.sh
timeout 330 python3 benchmarks/gdn.py --no-torch --shapes qwen --json "$OUT/table_qwen.json" 2>&1 | tee "$OUT/table_qwen.txt" | grep "^| Qwen"
timeout 240 python3 benchmarks/gdn.py --no-torch --shapes olmo --bt 2x4096 --json "$OUT/table_olmo_2x4096.json" 2>&1 | tee "$OUT/table_olmo_2x4096.txt" | grep "^| Olmo"
