#!/usr/bin/env bash
# Session 23, call 9: `gpu_check.sh ncu` (Nsight Compute counters, benchmarks/gdn_ncu.py) at Qwen3-Next 8x4096 (call 8's
# report of it did not come back) and at both 2x4096 shapes.
set -uo pipefail
cd "$(dirname "$0")/../../.."
for sb in "qwen 8x4096" "olmo 2x4096" "qwen 2x4096"; do
  # shellcheck disable=SC2086
  timeout 180 bash benchmarks/gpu_check.sh ncu $sb
done
