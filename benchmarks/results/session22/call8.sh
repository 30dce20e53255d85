#!/usr/bin/env bash
# Session 22, call 8: `gdn.py --hard` (new): errors on random and on nearly parallel keys, ours, ours with
# bwd_split_t and fla (its wheels carried), both head shapes.
set -uo pipefail
cd "$(dirname "$0")/../../.."
mkdir -p "$OUT"
source benchmarks/gpu_env.sh
timeout 500 python3 benchmarks/gdn.py --hard --shapes olmo,qwen 2>&1 | tee "$OUT/hard.txt"
