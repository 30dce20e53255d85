#!/usr/bin/env bash
# Session 25, call 9: value blocks of 32 columns (two slots where 64 fit one) for the Gluon output kernel and the Gluon
# _bwd_dqk, against the rules' forms, the kernels alone at 8x4096 (outputs compared with the Triton kernels').
set -uo pipefail
cd "$(dirname "$0")/../../.."
mkdir -p "$OUT"
source benchmarks/gpu_env.sh
timeout 80 python3 benchmarks/gluon_out.py --shapes qwen --bt 8x4096 --warps 4,4:0:2:32,4:0:1:32,8:128:2:32 2>&1 | grep "^gluon_\|rror" | cut -c1-400 | tee -a "$OUT/bv32.txt"
timeout 70 python3 benchmarks/gluon_out.py --shapes olmo --bt 8x4096 --warps 8:128,4:0:2:32,8:128:2:32 2>&1 | grep "^gluon_\|rror" | cut -c1-400 | tee -a "$OUT/bv32.txt"
timeout 70 python3 benchmarks/gluon_bwd.py --kernel dqk --shapes qwen,olmo --bt 8x4096 --warps 4,4:0:2:32 2>&1 | grep "^gluon_\|rror" | cut -c1-400 | tee -a "$OUT/bv32.txt"
