#!/usr/bin/env bash
# Session 23, call 2: the state passes' launch settings at 2x4096, where each program's serial chain of 64 chunks is
# the time (about 3.3 us a chunk): the forward pass on 128-wide V blocks (Olmo-Hybrid: 120 programs, one wave on 3
# stages, 8 warps) or on 3 stages at 64 (180 programs), the backward pass on 128-wide blocks (one-block pass, 8 warps,
# 3 or 2 stages). Two alternating rounds; then the fastest forms against the default's results.
set -uo pipefail
cd "$(dirname "$0")/../../.."
mkdir -p "$OUT"
source benchmarks/gpu_env.sh
C='[{}, {"state_bv": 128, "state_warps": 8}, {"state_stages": 3}, {"bstate_bv": 128}, {"bstate_bv": 128, "bstate_stages_few": 2}, {"bstate_ks_min": 2.0}]'
timeout 420 python3 benchmarks/gdn.py --sweep "$C" --shapes olmo,qwen --bt 2x4096 2>&1 | grep sweep | tee "$OUT/sweep_r1.txt"
timeout 150 python3 benchmarks/gdn.py --sweep "$C" --shapes olmo --bt 2x4096 2>&1 | grep sweep | tee "$OUT/sweep_r2.txt"
