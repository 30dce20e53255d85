"""`hpt report`: tables, plots and paired comparisons from run, eval and sweep dirs, and the HTML page
rendering in headless Chromium (no console errors, every image loaded; a screenshot is kept under
artifacts/report/)."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from hybrid_posttrain.cli import main as hpt
from hybrid_posttrain.errors import UserError
from hybrid_posttrain.evaluation.runner import evaluate
from hybrid_posttrain.generation import make_generator
from hybrid_posttrain.report import build_report

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "artifacts" / "report"


def eval_cells(sweep: Path, teachers: dict, suites: list[str], max_items: int) -> list[dict]:
    """Sweep cells (tiny-hybrid x teacher x seeds 0, 1) as `hpt sweep` records them, each evaluated with the
    program teacher of that style standing in for the trained student."""
    cells = []
    for teacher, (style, slip) in teachers.items():
        for seed in (0, 1):
            cid = f"tiny-hybrid__{teacher}__s{seed}"
            g = make_generator("program", style=style, slip_rate=slip, seed=seed, world_seed=0)
            evaluate("cell", suites, sweep / "cells" / cid / "eval", generator=g, progress=False, max_items=max_items)
            cells.append({"id": cid, "student": "tiny-hybrid", "teacher": teacher, "seed": seed,
                          "run_dir": f"cells/{cid}", "eval_dir": f"cells/{cid}/eval", "seconds": 1.0})
    return cells


def make_run(d: Path, style: str, slip: float, decay: float) -> dict:
    g = make_generator("program", style=style, slip_rate=slip, world_seed=0)
    summary = evaluate(f"program-{style}", ["toyworld-facts", "toyworld-programs"], d / "eval", generator=g,
                       progress=False, max_items=66)
    with open(d / "metrics.jsonl", "w") as f:
        for s in range(0, 60, 5):
            f.write(json.dumps({"stage": "sft", "step": s, "loss": 3 * math.exp(-s / decay) + 0.3,
                                "learning_rate": 1e-3}) + "\n")
        f.write('{"step": 60, "lo')  # a torn last line (a run killed mid-write) is tolerated
    (d / "manifest.json").write_text(json.dumps({"name": d.name, "seed": 0, "wall_time_s": 12.5,
                                                 "train_tokens": 10000, "tokens_per_s": 800.0}))
    return summary


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    root = tmp_path_factory.mktemp("report-inputs")
    make_run(root / "run-cot", "cot", 0.0, 20)
    make_run(root / "run-noisy", "noisy-cot", 0.3, 40)
    tdir = root / "gen" / "noisy-cot"
    tdir.mkdir(parents=True)
    (tdir / "manifest.json").write_text(json.dumps({
        "teacher": "noisy-cot", "backend": "program", "counts": {"samples": 300, "failures": 0},
        "failure_rate": 0.0, "tokens": {"mean": 41.5, "p95": 80.0}, "throughput": {"tokens_per_s": 5000.0},
        "accuracy": {"overall": 0.71, "by_depth": {"2": 1.0, "4": 0.8, "6": 0.55}}}))
    # a sweep dir as `hpt sweep` writes it: cells/<id>/ run dirs, paths in matrix.json relative to it
    sweep = root / "sweep"
    cells = eval_cells(sweep, {"cot": ("cot", 0.0), "noisy": ("noisy-cot", 0.3)},
                       ["toyworld-facts", "toyworld-programs"], max_items=33)
    for c in cells:
        (sweep / c["run_dir"] / "metrics.jsonl").write_text(
            "".join(json.dumps({"step": s, "loss": 2.0 / (1 + s)}) + "\n" for s in range(5)))
    rows = [{"student": "tiny-hybrid", "teacher": "noisy", "suite": "toyworld-programs", "category": "reasoning",
             "mean": 0.6123, "ci_low": 0.4321, "ci_high": 0.7654, "seeds": [0, 1]}]
    best = [{"student": "tiny-hybrid", "category": "reasoning", "best": "cot", "score": 1.0, "runner_up": "noisy",
             "diff": 0.39, "diff_ci": [0.3, 0.48], "p_value": 1e-9, "test": "mcnemar-exact", "significant": True}]
    (sweep / "matrix.json").write_text(json.dumps({"name": "t", "seeds": [0, 1], "cells": cells, "matrix": rows,
                                                   "best": best, "teachers": {}}))
    return root


def test_report_from_run_dirs(artifacts, tmp_path):
    out = tmp_path / "report"
    rc = hpt(["report", str(artifacts / "run-cot"), str(artifacts / "run-noisy"), str(artifacts / "gen"),
              "--out", str(out)])
    assert rc == 0
    html = (out / "report.html").read_text()
    md = (out / "report.md").read_text()
    imgs = re.findall(r'<img [^>]*src="([^"]+)"', html)
    assert len(imgs) == 5 and all(s.startswith("data:image/png;base64,") for s in imgs)
    assert not re.search(r'(src|href)="(https?:)?//', html)  # nothing fetched from a network
    for name in ("knowledge_vs_reasoning", "suites", "depth", "training", "teachers"):
        assert (out / "plots" / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"plots/{name}.png" in md
    noisy = json.loads((artifacts / "run-noisy" / "eval" / "summary.json").read_text())["suites"]
    e = noisy["toyworld-programs"]
    assert f"| run-noisy | {1.0:.3f} [1.000, 1.000] n=66 | {e['value']:.3f} [{e['ci_low']:.3f}, {e['ci_high']:.3f}] n=66" in md
    # the paired comparison of the noisy run against the first (perfect) one: significantly worse
    row = next(line for line in md.splitlines() if line.startswith("| toyworld-programs | run-noisy | run-cot |"))
    diff = float(row.split("|")[5])
    assert diff == pytest.approx(e["value"] - 1.0, abs=1e-3) and diff < 0
    assert "| noisy-cot | program | 300 |" in md
    assert "run-noisy" in html and "accuracy by depth" in html


def test_report_from_sweep_matrix(artifacts, tmp_path):
    paths = build_report([str(artifacts / "sweep")], tmp_path / "r")
    md = paths["markdown"].read_text()
    assert "| model | seeds |" in md
    cot = next(line for line in md.splitlines() if line.startswith("| cot → tiny-hybrid | 2 |"))
    assert "1.000 [1.000, 1.000] n=33" in cot
    noisy = next(line for line in md.splitlines() if line.startswith("| noisy → tiny-hybrid | 2 |"))
    assert "0.612 [0.432, 0.765]" in noisy  # the sweep's own seeds-and-items interval is used
    assert "## Best teacher per student" in md and "| tiny-hybrid | reasoning | cot | 1.000 | noisy | +0.390" in md
    assert "Paired comparisons" not in md  # cells are compared by the sweep's tests, not against cell 0
    assert "plots/knowledge_vs_reasoning.png" in md and "plots/training.png" in md and "plots/depth.png" in md


def test_report_user_errors(tmp_path):
    with pytest.raises(UserError, match="not a folder"):
        build_report([str(tmp_path / "missing")], tmp_path / "r")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="nothing to report"):
        build_report([str(tmp_path / "empty")], tmp_path / "r")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "summary.json").write_text('{"suites": {\n  "x": oops}\n}')
    with pytest.raises(UserError) as e:
        build_report([str(bad)], tmp_path / "r")
    assert e.value.path == str(bad / "summary.json") and e.value.line == 2


# ------------------------------------------------------------------------------------ headless Chromium

def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def render(html_file: Path, user_data: Path, screenshot: Path | None = None) -> tuple[str, str]:
    """(dumped DOM, console lines) of a page loaded in headless Chromium."""
    exe = _chromium()
    flags = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={user_data}",
             "--enable-logging=stderr", "--v=0", "--hide-scrollbars", "--virtual-time-budget=10000"]
    uri = html_file.resolve().as_uri()
    dom = subprocess.run(flags + ["--dump-dom", uri], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    if screenshot is not None:
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        shot = subprocess.run(flags + ["--window-size=1280,3900", f"--screenshot={screenshot}", uri],
                              capture_output=True, text=True, timeout=120)
        assert shot.returncode == 0, shot.stderr[-2000:]
    console = [line for line in dom.stderr.splitlines() if ":CONSOLE" in line]
    return dom.stdout, "\n".join(console)


@pytest.mark.skipif(_chromium() is None, reason="chromium not installed (apt-get install -y chromium)")
def test_report_renders_in_headless_chromium(artifacts, tmp_path):
    out = tmp_path / "report"
    build_report([str(artifacts / "run-cot"), str(artifacts / "run-noisy"), str(artifacts / "gen")], out)
    shot = ARTIFACTS / "report.png"
    dom, console = render(out / "report.html", tmp_path / "chrome", shot)
    assert console == "", console
    body = re.search(r"<body([^>]*)>", dom).group(1)
    assert 'data-ready="1"' in body
    assert 'data-images-loaded="5/5"' in body, body
    root = re.search(r"<html[^>]*>", dom).group(0)
    assert "data-js-errors" not in root and "data-resource-errors" not in root
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and int.from_bytes(png[16:20], "big") == 1280
    shutil.copy(out / "report.html", ARTIFACTS / "report.html")

    # the checks can fail: a broken image and a script error are caught
    broken = tmp_path / "broken.html"
    page = (out / "report.html").read_text().replace("data:image/png;base64,iVBOR", "data:image/png;base64,XXXX", 1)
    broken.write_text(page.replace("</body>", "<script>undefinedFunction();</script></body>"))
    dom, console = render(broken, tmp_path / "chrome2")
    root = re.search(r"<html[^>]*>", dom).group(0)
    assert 'data-images-loaded="4/5"' in dom
    assert 'data-js-errors="1"' in root and 'data-resource-errors="1"' in root
    assert "undefinedFunction" in console


def test_report_reads_the_matrix_hpt_sweep_builds(tmp_path):
    """The contract with sweep.py: its build_matrix output (cells with relative dirs, hierarchical rows, best
    teachers) is what the report reads."""
    from hybrid_posttrain.recipe import load_spec
    from hybrid_posttrain.sweep import build_matrix

    spec = load_spec(REPO / "teachers" / "sweeps" / "demo.yaml").model_copy(
        update={"suites": ["toyworld-facts", "toyworld-programs"]})
    out = tmp_path / "sweep"
    cells = eval_cells(out, {"program-cot": ("cot", 0.0), "program-noisy-cot": ("noisy-cot", 0.4)}, spec.suites,
                       max_items=44)
    matrix = build_matrix(spec, out, cells, {}, [0, 1])
    (out / "matrix.json").write_text(json.dumps(matrix))
    md = build_report([str(out)], tmp_path / "r")["markdown"].read_text()
    row = next(r for r in matrix["matrix"] if r["teacher"] == "program-noisy-cot" and r["suite"] == "toyworld-programs")
    line = next(x for x in md.splitlines() if x.startswith("| program-noisy-cot → tiny-hybrid | 2 |"))
    assert f"{row['mean']:.3f} [{row['ci_low']:.3f}, {row['ci_high']:.3f}]" in line
    best = next(b for b in matrix["best"] if b["category"] == "reasoning")
    assert best["best"] == "program-cot"
    assert f"| tiny-hybrid | reasoning | program-cot | {best['score']:.3f} | program-noisy-cot |" in md
