#!/usr/bin/env bash
# Session 23, call 3: the forward state pass with split key columns (`_fwd_state_ks`: 64 + 32 for Olmo-Hybrid's 96,
# the 32-column state part transposed) on 3 stages, which fits two programs an SM (offline: 235 registers, 105 KB;
# the one-block pass on 3 stages takes 137 KB, one an SM), where the state pass's serial chain is the time
# (2x4096, 1x32768). Two alternating rounds, then its results against the default's.
# Needs fstate_ks.patch applied to main at 4465159: git apply benchmarks/results/session23/fstate_ks.patch
set -uo pipefail
cd "$(dirname "$0")/../../.."
mkdir -p "$OUT"
source benchmarks/gpu_env.sh
C='[{}, {"fstate_ks": true}, {"fstate_ks": true, "fstate_ks_stages": 2}, {}, {"fstate_ks": true}, {"fstate_ks": true, "fstate_ks_stages": 2}]'
timeout 400 python3 benchmarks/gdn.py --sweep "$C" --shapes olmo --bt 2x4096,1x32768 2>&1 | grep sweep | tee "$OUT/sweep_ks.txt"
timeout 120 python3 benchmarks/gdn.py --agree '[{"fstate_ks": true}]' --shapes olmo --bt 2x4096,1x32768 2>&1 | grep agree | tee "$OUT/agree.txt"
