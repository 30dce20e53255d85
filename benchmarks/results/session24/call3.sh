#!/usr/bin/env bash
# Session 24, call 3: the Gluon output kernel (hybrid_posttrain/kernels/gdn/out_gluon.py, CONFIG out_gluon) on both
# shapes: against the Triton `_fwd_out` on one forward's buffers (benchmarks/gluon_out.py, 4 and 8 warps); the
# forward and forward+backward with it on and off (gdn.py --sweep, two alternating rounds); the GPU tests of the
# forward (bf16 at the full head dims: packed documents, cut-short chunks, parts, no-grad, hard inputs).
set -uo pipefail
cd "$(dirname "$0")/../../.."
mkdir -p "$OUT"
source benchmarks/gpu_env.sh
timeout 200 python3 benchmarks/gluon_out.py --shapes qwen,olmo --bt 8x4096,2x4096,1x32768 --warps 4,8 2>&1 | cut -c1-600 | tee "$OUT/gluon_out.txt"
C='[{"out_gluon": false}, {}, {"out_gluon": false}, {}]'
timeout 300 python3 benchmarks/gdn.py --sweep "$C" --shapes qwen,olmo --bt 8x4096,1x32768 2>&1 | grep -v "^$" | tee "$OUT/sweep.txt" | grep "sweep" | cut -c1-260
timeout 280 python3 -m pytest -q -o addopts="" -p no:cacheprovider tests/kernels/test_gdn.py \
  -k "chunk_matches_recurrence or groups_of_two or varlen or no_grad_forward or nearly_parallel or strong_decay or in_parts or backward_forms or small_value" 2>&1 | tail -6 | tee "$OUT/tests.txt"
