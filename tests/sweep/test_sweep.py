"""Teacher sweeps: end to end (quick), SIGKILL + --resume == uninterrupted, significance on constructed data."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hybrid_posttrain.data.io import write_json, write_jsonl
from hybrid_posttrain.recipe import load_spec
from hybrid_posttrain.sweep import build_matrix, cell_id

REPO = Path(__file__).resolve().parents[2]

SWEEP = """kind: sweep
name: t
teachers: [{teachers}/program-terse.yaml, {teachers}/program-cot.yaml]
students:
  - {{name: hyb, model: tiny-hybrid, base: {recipes}/base.yaml, recipe: {recipes}/student.yaml}}
  - {{name: dense, model: tiny-dense, base: {recipes}/base.yaml, recipe: {recipes}/student.yaml}}
seeds: [0]
prompts:
  - {{source: toyworld:facts, split: train, seed: 0, attributes: [town]}}
  - {{source: toyworld:programs, split: train, seed: 0, depths: [2, 3], n_per_depth: 10}}
policy: all
suites: [toyworld-facts-mc, toyworld-programs]
suite_overrides: ["toyworld.n_per_depth=3", "toyworld.depths=[2,4]", "generation.max_new_tokens=40"]
max_eval_items: 6
base_overrides: ["stages.0.optim.max_steps=3", "stages.0.data.toyworld.corpus_repeats=1", "stages.0.data.max_length=128"]
quick:
  seeds: [0]
  overrides: ["stages.0.optim.max_steps=3", "stages.0.data.max_length=128"]
"""


def write_sweep(tmp_path: Path) -> Path:
    p = tmp_path / "sweep.yaml"
    p.write_text(SWEEP.format(teachers=REPO / "teachers", recipes=REPO / "recipes" / "demo"))
    return p


def hpt(*args, **kw):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-m", "hybrid_posttrain.cli", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True, **kw)


def means(out: Path) -> dict:
    m = json.loads((out / "matrix.json").read_text())
    return {(r["student"], r["teacher"], r["suite"]): r["mean"] for r in m["matrix"]}


@pytest.fixture(scope="module")
def finished_sweep(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sweep")
    spec = write_sweep(tmp)
    out = tmp / "out"
    proc = hpt("sweep", str(spec), "--quick", "--output-dir", str(out))
    stdout, stderr = proc.communicate(timeout=900)
    assert proc.returncode == 0, stderr[-3000:]
    return spec, out, stdout


def test_quick_sweep_end_to_end(finished_sweep):
    spec, out, stdout = finished_sweep
    m = json.loads((out / "matrix.json").read_text())
    assert len(m["cells"]) == 4
    suites = {r["suite"] for r in m["matrix"]}
    assert suites == {"toyworld-facts-mc", "toyworld-programs"}
    assert all(0.0 <= r["ci_low"] <= r["mean"] <= r["ci_high"] <= 1.0 for r in m["matrix"])
    assert {(b["student"], b["category"]) for b in m["best"]} == {(s, c) for s in ("hyb", "dense")
                                                                  for c in ("knowledge", "reasoning")}
    assert m["teachers"]["program-cot"]["mean_completion_tokens"] > m["teachers"]["program-terse"]["mean_completion_tokens"]
    assert (out / "report" / "report.html").exists() and (out / "matrix.md").exists()
    assert "best" in stdout and "report" in stdout
    assert (out / "base" / "hyb" / "final" / "config.json").exists()


def test_sigkill_then_resume_equals_uninterrupted(finished_sweep, tmp_path):
    spec, ref_out, _ = finished_sweep
    out = tmp_path / "out"
    proc = hpt("sweep", str(spec), "--quick", "--output-dir", str(out))
    state = out / "state.json"
    deadline = time.time() + 600
    while time.time() < deadline:
        if len(list((out / "cells").glob("*/cell.json"))) >= 2:
            break
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = {p.parent.name for p in (out / "cells").glob("*/cell.json")}
    assert 2 <= len(done_before) < 4
    mtimes = {c: (out / "cells" / c / "final" / "model.safetensors").stat().st_mtime for c in done_before}
    again = hpt("sweep", str(spec), "--quick", "--resume", "--output-dir", str(out))
    _, stderr = again.communicate(timeout=900)
    assert again.returncode == 0, stderr[-3000:]
    # finished cells were not recomputed, the rest were, and the matrix equals the uninterrupted run's
    assert all((out / "cells" / c / "final" / "model.safetensors").stat().st_mtime == t for c, t in mtimes.items())
    assert len(json.loads(state.read_text())["cells"]) == 4
    assert means(out) == means(ref_out)


def test_rerun_without_resume_is_refused(finished_sweep):
    spec, out, _ = finished_sweep
    r = subprocess.run([sys.executable, "-m", "hybrid_posttrain.cli", "sweep", str(spec), "--output-dir", str(out)],
                       cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 2 and "--resume" in r.stderr and r.stderr.count("\n") == 1


def _constructed(tmp_path: Path, a_correct: list[int], b_correct: list[int]):
    spec = load_spec(write_sweep(tmp_path), check_files=True)
    cells = []
    for teacher, correct in (("A", a_correct), ("B", b_correct)):
        for seed in (0, 1):
            cid = cell_id("hyb", teacher, seed)
            ev = tmp_path / "cells" / cid / "eval"
            for suite in ("toyworld-facts-mc", "toyworld-programs"):
                write_jsonl(ev / suite / "results.jsonl",
                            [{"id": f"q{i}", "correct": c, "acc": c} for i, c in enumerate(correct)])
            write_json(ev / "summary.json", {})
            cells.append({"id": cid, "student": "hyb", "teacher": teacher, "seed": seed,
                          "run_dir": f"cells/{cid}", "eval_dir": f"cells/{cid}/eval"})
    return build_matrix(spec, tmp_path, cells, {}, [0, 1])


def test_identical_results_are_not_significant(tmp_path):
    same = [1, 0, 1, 1, 0, 0, 1, 0] * 10
    m = _constructed(tmp_path, same, same)
    for b in m["best"]:
        assert b["diff"] == 0.0 and not b["significant"] and b["p_value"] > 0.5


def test_planted_difference_is_significant(tmp_path):
    strong = [1] * 70 + [0] * 10
    weak = [0] * 60 + [1] * 20
    m = _constructed(tmp_path, weak, strong)
    for b in m["best"]:
        assert b["best"] == "B" and b["runner_up"] == "A" and b["significant"] and b["p_value"] < 1e-3
        assert b["diff_ci"][0] > 0.3
    row = [r for r in m["matrix"] if r["teacher"] == "B"][0]
    assert abs(row["mean"] - 70 / 80) < 1e-9 and row["ci_low"] < row["mean"] < row["ci_high"]


def test_prepare_then_concurrent_cell_jobs_then_collect(tmp_path):
    """The multi-GPU recipe: --prepare, separate --cell jobs at once on one output dir, then --resume."""
    spec = write_sweep(tmp_path)
    out = tmp_path / "out"
    prep = hpt("sweep", str(spec), "--quick", "--prepare", "--output-dir", str(out))
    assert prep.wait(timeout=600) == 0, prep.stderr.read()[-3000:]
    cells = [cell_id("hyb", "program-terse", 0), cell_id("dense", "program-cot", 0)]
    jobs = [hpt("sweep", str(spec), "--quick", "--resume", "--cell", c, "--output-dir", str(out)) for c in cells]
    for j in jobs:
        assert j.wait(timeout=600) == 0, j.stderr.read()[-3000:]
    assert {p.parent.name for p in (out / "cells").glob("*/cell.json")} == set(cells)
    final = hpt("sweep", str(spec), "--quick", "--resume", "--output-dir", str(out))
    assert final.wait(timeout=600) == 0, final.stderr.read()[-3000:]
    assert len(json.loads((out / "matrix.json").read_text())["cells"]) == 4
    assert len(json.loads((out / "state.json").read_text())["cells"]) == 4
