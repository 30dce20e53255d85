#!/usr/bin/env bash
# Written in session 25 for the next device session (NOT RUN yet): the prototype of the forward's prep in Gluon
# (hybrid_posttrain/kernels/gdn/prep_gluon.py, CONFIG prep_gluon off), never run on a GPU.
# 1. against the Triton _fwd_prep64 on one forward's recorded arguments (gc, 1/||k||, T, w, u), its forms timed;
# 2. its GPU tests (forward and backward against the fp64 reference, as close as with the Triton prep);
# 3. fwd / fwd+bwd with it off and on at 8x4096 (Qwen3-Next's forward needs 0.056 ms: session 25's table).
set -uo pipefail
cd "$(dirname "$0")/../../.."
mkdir -p "$OUT"
source benchmarks/gpu_env.sh
timeout 120 python3 benchmarks/gluon_bwd.py --kernel prep --shapes qwen,olmo --bt 8x4096 --warps 4,4:168 2>&1 | grep "^gluon_\|rror" | cut -c1-1500 | tee "$OUT/prep.txt"
timeout 300 python3 -m pytest -q -o addopts="" -p no:cacheprovider tests/kernels/test_gdn.py -k "gluon_prep" 2>&1 | grep -v "^\s*$" | tail -12 | cut -c1-800 | tee "$OUT/tests.txt"
timeout 120 python3 benchmarks/gdn.py --sweep '[{}, {"prep_gluon": true}]' --shapes qwen,olmo --bt 8x4096 2>&1 | grep "^sweep" | cut -c1-300 | tee "$OUT/sweep.txt"
