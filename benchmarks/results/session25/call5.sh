#!/usr/bin/env bash
# Session 25, call 5: the GPU tests of the Gluon output kernel and the Gluon _bwd_dqk as committed (the wy tests ran in
# call 4), and the fast launch path's (Gluon launches through it included).
set -uo pipefail
cd "$(dirname "$0")/../../.."
mkdir -p "$OUT"
source benchmarks/gpu_env.sh
timeout 560 python3 -m pytest -q -o addopts="" -p no:cacheprovider tests/kernels/test_launch.py tests/kernels/test_gdn.py -k "launch or gluon_output or (gluon_bwd and dqk) or gluon_dqk or gluon_wy" 2>&1 | grep -v "^\s*$" | tail -15 | cut -c1-700 | tee "$OUT/tests.txt"
