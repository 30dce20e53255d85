#!/usr/bin/env bash
# Session 23, call 8: Nsight Compute counters of our kernels (benchmarks/gdn_ncu.py): one no-grad forward and one
# forward+backward at Olmo-Hybrid and Qwen3-Next 8x4096, then Qwen3-Next 1x32768; the raw CSV page of each report and
# its table.
set -uo pipefail
cd "$(dirname "$0")/../../.."
mkdir -p "$OUT"
source benchmarks/gpu_env.sh
NCU=$(command -v ncu || ls /usr/local/cuda/bin/ncu 2>/dev/null | head -1)
echo "ncu: $NCU ($($NCU --version | tail -1))"
for sb in qwen:8x4096 olmo:8x4096 qwen:1x32768; do
  s=${sb%%:*}; bt=${sb##*:}
  timeout 240 "$NCU" --profile-from-start off --section SpeedOfLight --section Occupancy --section LaunchStats \
    --section WarpStateStats --section ComputeWorkloadAnalysis -k 'regex:^_(fwd|bwd)' -f -o "$OUT/${s}_$bt" \
    python3 benchmarks/gdn_ncu.py run --shape "$s" --bt "$bt" > "$OUT/${s}_${bt}_ncu.log" 2>&1
  echo "== $s $bt: ncu exit $?"; tail -3 "$OUT/${s}_${bt}_ncu.log"
  "$NCU" --import "$OUT/${s}_$bt.ncu-rep" --csv --page raw > "$OUT/${s}_${bt}_raw.csv" 2>&1
  python3 benchmarks/gdn_ncu.py table "$OUT/${s}_${bt}_raw.csv" | tee "$OUT/${s}_${bt}_table.txt"
done
