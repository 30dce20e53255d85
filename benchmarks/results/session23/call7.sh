#!/usr/bin/env bash
# Session 23, call 7: GPU busy time (not the wall) of several sequences in parts at 2x4096 (parts_nseq.patch, applied
# here with patch -p1), against main's settings in the same patched tree: whether the parts would pay once the host's
# cost were out of the way (call 1 read only wall times, which the host sets at 2x4096). gdn.py --host prints host,
# GPU busy and wall ms a call for ours.
set -uo pipefail
cd "$(dirname "$0")/../../.."
mkdir -p "$OUT"
patch -p1 -s < benchmarks/results/session23/parts_nseq.patch || exit 1
source benchmarks/gpu_env.sh
P='{"parts_max_seqs": 8, "state_parts_load": 1.5, "bstate_parts_load": 1.5}'
for round in 1 2; do
  for cfg in '{}' "$P"; do
    echo "== round $round config $cfg"
    HPT_GDN_CONFIG="$cfg" timeout 140 python3 benchmarks/gdn.py --host --no-fla --no-torch --shapes olmo,qwen --bt 2x4096 2>&1 \
      | grep '^| ' | grep -v "Triton's launch"
  done
done 2>&1 | tee "$OUT/host_parts.txt"
