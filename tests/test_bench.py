"""`hpt bench` dispatches to the benchmark scripts (their --help here: the benchmarks themselves need a GPU)."""

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("what,flag", [("kernels", "--bt"), ("step", "--seq")])
def test_hpt_bench_runs_the_script(what, flag):
    r = subprocess.run([sys.executable, "-m", "hybrid_posttrain.cli", "bench", what, "--help"], cwd=REPO,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert flag in r.stdout


def test_unknown_benchmark_is_one_line_exit_2():
    r = subprocess.run([sys.executable, "-m", "hybrid_posttrain.cli", "bench", "nope"], cwd=REPO,
                       capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "invalid choice" in r.stderr
