#!/usr/bin/env bash
# Written in session 24 for the next device session (NOT RUN yet): what session 24 could not check on the GPU.
# 1. the Gluon `_bwd_dqk` prototype against the Triton kernel on recorded arguments (benchmarks/gluon_dqk.py);
# 2. the GPU tests of the Gluon output kernel as committed (the out_gluon_min rule's check, K = 80, the alignment rule);
# 3. Olmo-Hybrid 8x4096 forward again (met at 1.503x in session 24's call 7: 0.3% of margin), fla carried.
set -uo pipefail
cd "$(dirname "$0")/../../.."
mkdir -p "$OUT"
source benchmarks/gpu_env.sh
timeout 200 python3 benchmarks/gluon_dqk.py --shapes qwen,olmo --bt 8x4096 --warps 8,4 2>&1 | cut -c1-800 | tee "$OUT/gluon_dqk.txt"
timeout 240 python3 -m pytest -q -o addopts="" -p no:cacheprovider tests/kernels/test_gdn.py -k "gluon" 2>&1 | tail -4 | tee "$OUT/tests.txt"
timeout 150 python3 benchmarks/gdn.py --no-torch --shapes olmo --bt 8x4096 2>&1 | tee "$OUT/table_olmo_8x4096.txt" | grep "^| Olmo"
