#!/usr/bin/env bash
# session 16: run the GPU kernel tests not yet done (ids in .gdnx/done.txt), in order, until the time budget ($1 s)
set -uo pipefail
export PYTHONPATH=$PWD TRITON_INTERPRET=0 PYTHONUNBUFFERED=1
mkdir -p $OUT
python3 -m pytest -q -o addopts="" --collect-only -k "not torch" tests/kernels/test_gdn.py 2>/dev/null | grep '::' > $OUT/all_ids.txt
touch .gdnx/done.txt
grep -vxF -f .gdnx/done.txt $OUT/all_ids.txt > /tmp/todo.txt || true
echo "collected $(wc -l < $OUT/all_ids.txt), to run $(wc -l < /tmp/todo.txt)"
mapfile -t ids < /tmp/todo.txt
((${#ids[@]})) || exit 0
timeout "$1" python3 -m pytest -o addopts="" -v -rs -p no:cacheprovider "${ids[@]}" 2>&1 | tee $OUT/queue.txt | grep -E 'PASSED|FAILED|ERROR|SKIPPED|passed|failed' | sed 's/ *\[ *[0-9]*%\]//' | tail -100
