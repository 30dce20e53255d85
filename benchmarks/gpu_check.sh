#!/usr/bin/env bash
# GPU checks of the GDN kernels in parts that each fit one device call (10 minutes on the device tool):
#
#   bash benchmarks/gpu_check.sh table        # benchmarks/gdn.py table, Olmo-Hybrid then Qwen3-Next (ours, fla)
#   bash benchmarks/gpu_check.sh host         # gdn.py --host at 2x4096: host / GPU busy / wall ms a call (ours, fla),
#                                             # our driver's functions timed, cProfile (session 18: at 2x4096 the
#                                             # median reads the CPU)
#   bash benchmarks/gpu_check.sh tests 1 4    # GPU kernel tests, part 1 of 4 (every 4th node id from the 1st)
#   bash benchmarks/gpu_check.sh tests 2 4    # part 2 of 4, and so on
#   bash benchmarks/gpu_check.sh rest DONE 560  # the tests whose node ids are not in the file DONE, in order, for at
#                                               # most 560 s; the ids that passed go to $OUT/passed.txt (append them
#                                               # to DONE for the next call). Session 16 ran the whole file so in two
#                                               # calls on a fresh machine: 64 tests in 560 s, then 17.
#   bash benchmarks/gpu_check.sh passed LOG   # the node ids a pytest -v log shows passing (what rest writes to
#                                             # passed.txt; ids may hold spaces); needs no GPU
#   bash benchmarks/gpu_check.sh ncu qwen 8x4096  # Nsight Compute counters of one no-grad forward and one
#                                             # forward+backward of ours (benchmarks/gdn_ncu.py): ncu's raw CSV page
#                                             # to $OUT/ncu_<shape>_<BxT>.csv and its table (about 1 minute a shape)
#
# The whole kernel test file took 551 s on the H100 in one process (session 9), too close to the limit. Two parts
# no longer fit either: on a fresh machine (session 15), part 1 of 2 reached 32 of its 45 tests in 600 s, and the
# 89 tests took about 1320 s in all over three calls.
# Wheels carried in .gpuwheels*/ (flash-linear-attention, fla-core) are installed into /tmp/site first (gpu_env.sh).
# Output also goes to $OUT/<part>.txt when OUT is set (the device tool returns that folder).
set -uo pipefail
cd "$(dirname "$0")/.."
usage() {  # bad arguments: one line, exit status 2
  echo "error: gpu_check.sh: $1 (usage: gpu_check.sh table | host | tests I N, with 1 <= I <= N | rest DONE SECONDS | passed LOG | ncu SHAPE BxT)" >&2
  exit 2
}
part=${1:-}
case "$part" in
  table | host) (($# == 1)) || usage "$part takes no more arguments" ;;
  tests) [[ $# == 3 && $2 =~ ^[0-9]+$ && $3 =~ ^[0-9]+$ ]] && ((1 <= $2 && $2 <= $3)) || usage "tests needs I and N" ;;
  rest)
    [[ $# == 3 && $3 =~ ^[0-9]+$ ]] && (($3 > 0)) || usage "rest needs DONE (a file of node ids) and SECONDS"
    [[ -f $2 ]] || usage "rest: no file '$2' (DONE may be empty, not missing)"
    ;;
  passed) [[ $# == 2 && -f $2 ]] || usage "passed needs LOG, a file" ;;
  ncu) [[ $# == 3 && $2 =~ ^[a-z0-9]+$ && $3 =~ ^[1-9][0-9]*x[1-9][0-9]*$ ]] || usage "ncu needs SHAPE and BxT" ;;
  *) usage "unknown part '$part'" ;;
esac
passed_ids() {  # the node ids that log $1 shows PASSED (they may hold spaces: a parametrised message)
  sed -nE 's/^(tests\/kernels\/test_gdn\.py::.*) PASSED( +\[ *[0-9]+%\])?$/\1/p' "$1"
}
if [[ $part == passed ]]; then
  passed_ids "$2"
  exit 0
fi
source benchmarks/gpu_env.sh
log=/dev/null
if [[ -n "${OUT:-}" ]]; then
  mkdir -p "$OUT"
  if [[ $part == rest ]]; then log="$OUT/rest.txt"; elif [[ $part == ncu ]]; then log="$OUT/ncu_$2_$3.txt"
  else log="$OUT/$part${2:+_$2}.txt"; fi
fi
kernel_test_ids() {  # node ids of the GPU kernel tests, in file order (the torch backend's left out)
  python3 -m pytest -q -o addopts="" --collect-only -k "not torch" tests/kernels/test_gdn.py 2>/dev/null | grep '::'
}
case "$part" in
  table)
    for s in olmo qwen; do
      python3 benchmarks/gdn.py --no-torch --shapes "$s" ${OUT:+--json "$OUT/table_$s.json"}
    done 2>&1 | tee "$log"
    ;;
  host)
    python3 benchmarks/gdn.py --host --shapes olmo,qwen --bt 2x4096 2>&1 | tee "$log"
    ;;
  tests)
    i=$2
    n=$3
    mapfile -t ids < <(kernel_test_ids | awk -v i="$i" -v n="$n" '{ all[NR] = $0 } END { for (k = 1; k <= NR; k++) if ((k - 1) % n + 1 == i) print all[k] }')
    if ((${#ids[@]} == 0)); then
      echo "error: no tests collected for part $i of $n" >&2
      exit 2
    fi
    echo "part $i of $n: ${#ids[@]} tests" | tee "$log"
    python3 -m pytest -o addopts="" -q -rs --durations=10 "${ids[@]}" 2>&1 | tee -a "$log"
    ;;
  ncu)
    ncu=$(command -v ncu || ls /usr/local/cuda/bin/ncu 2>/dev/null | head -1)
    [[ -n "$ncu" ]] || { echo "error: gpu_check.sh ncu: no ncu (Nsight Compute) on this machine" >&2; exit 2; }
    rep=$(mktemp -d)/gdn
    csv=${OUT:-$(dirname "$rep")}/ncu_$2_$3.csv
    # ncu locks the clocks to base by default, so its durations read longer than gdn.py's
    "$ncu" --profile-from-start off --section SpeedOfLight --section Occupancy --section LaunchStats \
      --section WarpStateStats --section ComputeWorkloadAnalysis -k 'regex:^_(fwd|bwd)' -f -o "$rep" \
      python3 benchmarks/gdn_ncu.py run --shape "$2" --bt "$3" 2>&1 | grep -v '^==PROF== Profiling'
    ((PIPESTATUS[0] == 0)) || exit 1
    "$ncu" --import "$rep.ncu-rep" --csv --page raw > "$csv" || exit 1
    python3 benchmarks/gdn_ncu.py table "$csv" 2>&1 | tee "$log"
    ;;
  rest)
    mapfile -t ids < <(kernel_test_ids | grep -vxF -f "$2")
    echo "not yet done: ${#ids[@]} tests" | tee "$log"
    ((${#ids[@]})) || exit 0
    timeout "$3" python3 -m pytest -o addopts="" -v -rs -p no:cacheprovider "${ids[@]}" 2>&1 | tee -a "$log"
    if [[ -n "${OUT:-}" ]]; then
      passed_ids "$log" > "$OUT/passed.txt"
    fi
    ;;
esac
