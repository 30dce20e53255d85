#!/usr/bin/env bash
# Session 23, call 1: several sequences in parts (`_layout`: part p holds the p-th run of every sequence's chunks;
# each part's state pass on the side stream beside the other parts' per-chunk kernels), at 2x4096, where the serial
# state passes leave the GPU's bandwidth idle. Alternating rounds of the default and the part settings, then the
# results against the default's (bit for bit), then the GPU tests of the parts.
# Needs parts_nseq.patch applied to main at 4465159: git apply benchmarks/results/session23/parts_nseq.patch
set -uo pipefail
cd "$(dirname "$0")/../../.."
mkdir -p "$OUT"
source benchmarks/gpu_env.sh
M='"parts_max_seqs": 8'
C="[{}, {$M}, {$M, \"state_parts_load\": 1.5}, {$M, \"state_parts_load\": 1.5, \"bstate_parts_load\": 1.5}, {$M, \"state_parts_load\": 1.5, \"state_parts\": 3}, {}, {$M}, {$M, \"state_parts_load\": 1.5}, {$M, \"state_parts_load\": 1.5, \"bstate_parts_load\": 1.5}, {$M, \"state_parts_load\": 1.5, \"state_parts\": 3}]"
timeout 300 python3 benchmarks/gdn.py --sweep "$C" --shapes olmo,qwen --bt 2x4096 2>&1 | grep sweep | tee "$OUT/sweep_parts.txt"
timeout 90 python3 benchmarks/gdn.py --agree "[{$M, \"state_parts_load\": 1.5, \"bstate_parts_load\": 1.5}, {$M, \"state_parts_load\": 1.5, \"state_parts\": 3}]" \
  --shapes olmo,qwen --bt 2x4096 2>&1 | grep agree | tee "$OUT/agree.txt"
timeout 150 python3 -m pytest -q -o addopts="" tests/kernels/test_gdn.py -k "several_sequences or layout or parts" 2>&1 | tail -5 | tee "$OUT/tests.txt"
