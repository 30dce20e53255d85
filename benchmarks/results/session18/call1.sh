#!/usr/bin/env bash
# session 18, device call 1: where a call's time goes (host / device / wall, ours and fla; ours' cProfile), then
# the kernel tests that did not run on session 17's final code
set -uo pipefail
cd "$(dirname "$0")/../../.."
shopt -s nullglob
python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpuwheels*/*.whl >/dev/null 2>&1
export PYTHONPATH=/tmp/site:$PWD TRITON_INTERPRET=0 PYTHONUNBUFFERED=1
mkdir -p "$OUT"
timeout 280 python3 benchmarks/gdn.py --host --shapes olmo,qwen --bt 2x4096,8x4096 2>&1 | tee "$OUT/host.txt"
bash benchmarks/gpu_check.sh rest benchmarks/results/session18/done_s17.txt 270
