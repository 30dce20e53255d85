#!/usr/bin/env bash
# Session 25, call 2: the Gluon _bwd_dqk (hybrid_posttrain/kernels/gdn/dqk_gluon.py) in its forms against the Triton
# kernel (kernel alone), its GPU tests, and fwd+bwd with it on and off (gdn.py --sweep, no fla).
set -uo pipefail
cd "$(dirname "$0")/../../.."
mkdir -p "$OUT"
source benchmarks/gpu_env.sh
timeout 130 python3 benchmarks/gluon_dqk.py --shapes qwen --bt 8x4096,1x32768 --warps 4:0:1,4:0:2,8:128:1 2>&1 | grep "^gluon_dqk\|rror" | cut -c1-600 | tee "$OUT/dqk_qwen.txt"
timeout 80 python3 benchmarks/gluon_dqk.py --shapes olmo --bt 8x4096 --warps 4:0:2,4:0:1,8:128:1 2>&1 | grep "^gluon_dqk\|rror" | cut -c1-600 | tee "$OUT/dqk_olmo.txt"
timeout 200 python3 -m pytest -q -o addopts="" -p no:cacheprovider tests/kernels/test_gdn.py -k "gluon_dqk" 2>&1 | tail -15 | tee "$OUT/tests.txt"
timeout 170 python3 benchmarks/gdn.py --sweep '[{"dqk_gluon": false}, {}]' --shapes qwen,olmo --bt 8x4096,1x32768,2x4096 2>&1 | tee "$OUT/sweep.txt" | tail -20
