"""`hpt sweep SWEEP.yaml [--resume] [--quick] [--cell ID]`: teachers x students x seeds, resumable cell by cell.

For each cell (student, teacher, seed):

1. the teacher's data: `hpt generate` over the sweep's prompt sets (once per teacher, shared by all
   cells; sharded and resumable), filtered by the sweep's policy into one SFT set per teacher;
2. the student: its optional base training (once per student: e.g. the toyworld corpus, so it knows the
   facts), then its post-training recipe with `stages.0.data.train` pointed at the teacher's SFT set and
   the cell's seed;
3. evaluation on the sweep's knowledge and reasoning suites.

Layout under the output dir:

```
generation/<prompt-set index>/<teacher>/...   teacher data and manifests (see distill/generate.py)
data/<teacher>.jsonl                          the teacher's SFT set (all prompt sets, filtered)
base/<student>/                               base-training run dir (final/ is the cells' start)
cells/<student>__<teacher>__s<seed>/          the cell's run dir (eval/ inside)
cells/<id>/cell.json                          written atomically when the cell is finished
state.json                                    the finished cells (gathered from the cell.json files)
matrix.json, matrix.md                        per-cell entries + aggregates, best teachers, significance
report/                                       the HTML + Markdown report
```

A killed sweep resumes with `--resume`: finished cells (those with a cell.json) are skipped, a cell in
flight is redone from scratch. Each cell marks itself finished in its own folder, so separate `--cell`
jobs writing to one output dir never overwrite each other's state. Cells are independent: `--cell ID` runs one (e.g. one accelerate job per GPU, all
writing to the same output dir on a shared disk); a final `hpt sweep SWEEP --resume` builds the matrix.
"""

from __future__ import annotations

import itertools
import multiprocessing as mp
import shutil
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field, ValidationInfo, field_validator

from hybrid_posttrain.data.io import read_json, read_jsonl, write_json, write_jsonl
from hybrid_posttrain.distill.specs import PromptSet
from hybrid_posttrain.errors import UserError
from hybrid_posttrain.recipe import Frozen, resolve_spec_path


def _resolve(path: str, info: ValidationInfo) -> str:
    return resolve_spec_path(path, info, f"file {path!r} does not exist (paths are relative to the working "
                                         f"dir or the sweep file)")


class Student(Frozen):
    name: str
    model: str  # preset, local path or hub id
    recipe: str  # post-training recipe; stage 0 trains on the teacher's SFT set
    base: str | None = None  # optional base-training recipe, run once per student before the cells
    overrides: list[str] = []  # --set overrides for the student recipe

    _paths = field_validator("recipe", "base")(lambda v, info: v if v is None else _resolve(v, info))


class Quick(Frozen):
    """The `--quick` profile: fewer seeds and steps (what the test suite runs)."""

    seeds: list[int] = [0]
    overrides: list[str] = []  # extra --set overrides for the student recipes
    base_overrides: list[str] = []
    suite_overrides: list[str] = []
    max_eval_items: int | None = None


class SweepSpec(Frozen):
    kind: Literal["sweep"] = "sweep"
    name: str
    teachers: list[str | dict] = Field(min_length=1)  # teacher spec files, or inline teacher specs
    students: list[Student] = Field(min_length=1)
    seeds: list[int] = Field([0, 1], min_length=1)
    prompts: list[PromptSet] = Field(min_length=1)  # see distill/specs.py
    policy: Literal["all", "correct", "best-of-n"] = "correct"
    suites: list[str] = Field(min_length=1)
    suite_overrides: list[str] = []  # --set overrides applied to every suite (e.g. toyworld.n_per_depth=10)
    max_eval_items: int | None = None
    base_overrides: list[str] = []
    output_dir: str = "runs/sweep-{name}"
    jobs: int = Field(1, gt=0)  # cells run in parallel worker processes (one torch thread each on a CPU)
    quick: Quick = Quick()

    _teachers = field_validator("teachers")(lambda v, info: [_resolve(t, info) if isinstance(t, str) else t
                                                             for t in v])


def cell_id(student: str, teacher: str, seed: int) -> str:
    return f"{student}__{teacher}__s{seed}"


# ---------------------------------------------------------------------------------------------- steps

def teacher_data(spec: SweepSpec, out: Path, progress: bool = True) -> dict[str, dict]:
    """Generate (or reuse) every teacher's data; returns {teacher: {sft path, manifest stats}}."""
    from hybrid_posttrain.distill.datasets import to_sft_row
    from hybrid_posttrain.distill.filtering import filter_rows
    from hybrid_posttrain.distill.generate import generate, read_teacher_rows
    from hybrid_posttrain.distill.specs import GenerationSpec

    per_teacher: dict[str, dict] = {}
    for i, ps in enumerate(spec.prompts):
        gen = GenerationSpec.model_validate(
            {"kind": "generation", "name": f"{spec.name}-{i}", "teachers": spec.teachers,
             "prompts": ps.model_dump(mode="json"),
             "datasets": {"sft": False, "dpo": False}},
            context={"base_dir": str(Path.cwd())})
        manifests = generate(gen, out / "generation" / str(i), progress=progress)
        for teacher, man in manifests.items():
            rows = read_teacher_rows(out / "generation" / str(i) / teacher)
            entry = per_teacher.setdefault(teacher, {"rows": [], "manifests": []})
            entry["rows"] += [to_sft_row(r) for r in filter_rows(rows, spec.policy)]
            entry["manifests"].append(man)
    result = {}
    for teacher, entry in per_teacher.items():
        path = out / "data" / f"{teacher}.jsonl"
        write_jsonl(path, entry["rows"])
        mans = entry["manifests"]
        n = sum(m["counts"]["samples"] for m in mans) or 1
        result[teacher] = {
            "sft": str(path),
            "sft_rows": len(entry["rows"]),
            "mean_completion_tokens": sum(m["tokens"]["mean"] * m["counts"]["samples"] for m in mans) / n,
            "teacher_accuracy": sum((m["accuracy"]["overall"] or 0.0) * m["counts"]["samples"] for m in mans) / n,
        }
    return result


def _run(recipe_path: str, overrides: list[str], run_dir: Path) -> None:
    from hybrid_posttrain.recipe import load_recipe
    from hybrid_posttrain.runner import run_recipe

    recipe = load_recipe(recipe_path, overrides)
    state = read_json(run_dir / "state.json") if (run_dir / "state.json").exists() else {}
    if len(state.get("finished_stages", [])) == len(recipe.stages) and (run_dir / "final").exists():
        return
    if run_dir.exists():
        shutil.rmtree(run_dir)  # a run in flight when the sweep was killed is redone from scratch
    run_recipe(recipe, run_dir)


def base_model(spec: SweepSpec, student: Student, out: Path, extra: list[str]) -> str:
    if student.base is None:
        return student.model
    run_dir = out / "base" / student.name
    _run(student.base, [f"model.name={student.model}", *spec.base_overrides, *extra], run_dir)
    return str(run_dir / "final")


def run_cell(spec: SweepSpec, student: Student, teacher: str, seed: int, data: dict, out: Path, quick: bool,
             progress: bool = True) -> dict:
    from hybrid_posttrain.evaluation.runner import evaluate

    q = spec.quick if quick else None
    start = base_model(spec, student, out, q.base_overrides if q else [])
    cid = cell_id(student.name, teacher, seed)
    run_dir = out / "cells" / cid
    overrides = [f"model.name={start}", f"stages.0.data.train={data[teacher]['sft']}", f"seed={seed}",
                 f"name={cid}", *student.overrides, *(q.overrides if q else [])]
    t0 = time.time()
    _run(student.recipe, overrides, run_dir)
    suite_ov = [*spec.suite_overrides, *(q.suite_overrides if q else [])]
    max_items = (q.max_eval_items if q and q.max_eval_items else spec.max_eval_items)
    evaluate(str(run_dir / "final"), spec.suites, run_dir / "eval", max_items=max_items, overrides=suite_ov,
             progress=progress)
    cell = {"id": cid, "student": student.name, "teacher": teacher, "seed": seed,
            "run_dir": str(run_dir.relative_to(out)), "eval_dir": str((run_dir / "eval").relative_to(out)),
            "seconds": round(time.time() - t0, 1)}
    write_json(run_dir / "cell.json", cell)  # atomic: from here on the cell is finished and never redone
    return cell


def finished_cells(out: Path) -> dict[str, dict]:
    """{cell id: cell entry} of every finished cell under `out` (each cell marks itself in its folder)."""
    cells_dir = out / "cells"
    if not cells_dir.exists():
        return {}
    return {p.parent.name: read_json(p) for p in sorted(cells_dir.glob("*/cell.json"))}


# ---------------------------------------------------------------------------------------------- matrix

def _suite_rows(out: Path, cell: dict, suite: str) -> list[dict]:
    p = out / cell["eval_dir"] / suite / "results.jsonl"
    return read_jsonl(p) if p.exists() else []


def _score(row: dict) -> float:
    for key in ("correct", "acc"):
        if key in row:
            return float(row[key])
    raise KeyError("result row has neither `correct` nor `acc`")


def hierarchical_ci(scores: dict[int, dict[str, float]], n_boot: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """Mean over seeds of per-seed accuracy, with a 95% CI from resampling seeds, then items."""
    seeds = sorted(scores)
    ids = sorted(set.intersection(*(set(scores[s]) for s in seeds)))
    mat = np.array([[scores[s][i] for i in ids] for s in seeds])  # [seeds, items]
    mean = float(mat.mean())
    rng = np.random.default_rng(seed)
    boots = np.empty(n_boot)
    for b in range(n_boot):
        rs = rng.integers(0, len(seeds), len(seeds))
        ri = rng.integers(0, len(ids), len(ids))
        boots[b] = mat[rs][:, ri].mean()
    return mean, float(np.quantile(boots, 0.025)), float(np.quantile(boots, 0.975))


def build_matrix(spec: SweepSpec, out: Path, cells: list[dict], teacher_stats: dict, seeds: list[int]) -> dict:
    from hybrid_posttrain.evaluation.scoring import paired_test
    from hybrid_posttrain.evaluation.suites import resolve_suite

    categories = {s: resolve_suite(s)[0].category for s in spec.suites}
    by = {(c["student"], c["teacher"], c["seed"]): c for c in cells}
    teachers = sorted({c["teacher"] for c in cells})
    students = [s.name for s in spec.students if any(c["student"] == s.name for c in cells)]
    rows, best = [], []
    item_scores: dict[tuple[str, str, str], dict[str, float]] = {}  # (student, teacher, category) -> {seed:item: score}
    for student, teacher in itertools.product(students, teachers):
        for suite in spec.suites:
            per_seed = {}
            for s in seeds:
                cell = by.get((student, teacher, s))
                if cell is None:
                    continue
                per_seed[s] = {f"{suite}:{r['id']}": _score(r) for r in _suite_rows(out, cell, suite)}
            per_seed = {s: v for s, v in per_seed.items() if v}
            if not per_seed:
                continue
            mean, lo, hi = hierarchical_ci(per_seed)
            rows.append({"student": student, "teacher": teacher, "suite": suite, "category": categories[suite],
                         "mean": mean, "ci_low": lo, "ci_high": hi, "seeds": sorted(per_seed),
                         "per_seed": {str(s): float(np.mean(list(v.values()))) for s, v in per_seed.items()},
                         **{k: teacher_stats.get(teacher, {}).get(k) for k in ("mean_completion_tokens",
                                                                                  "teacher_accuracy")}})
            key = (student, teacher, categories[suite])
            for s, v in per_seed.items():
                item_scores.setdefault(key, {}).update({f"{s}:{k}": x for k, x in v.items()})
    for student in students:
        for category in ("knowledge", "reasoning"):
            ranked = sorted(((float(np.mean(list(item_scores[(student, t, category)].values()))), t)
                             for t in teachers if (student, t, category) in item_scores), reverse=True)
            if not ranked:
                continue
            entry = {"student": student, "category": category, "best": ranked[0][1], "score": ranked[0][0],
                     "ranking": [{"teacher": t, "score": sc} for sc, t in ranked]}
            if len(ranked) > 1:
                test = paired_test(item_scores[(student, ranked[0][1], category)],
                                   item_scores[(student, ranked[1][1], category)])
                entry.update(runner_up=ranked[1][1], diff=test["diff"], diff_ci=[test["ci_low"], test["ci_high"]],
                             p_value=test["p_value"], test=test["test"], n_pairs=test["n"],
                             significant=bool(test["p_value"] < 0.05))
            best.append(entry)
    return {"name": spec.name, "seeds": seeds, "cells": cells, "matrix": rows, "best": best,
            "teachers": teacher_stats}


def matrix_markdown(m: dict) -> str:
    lines = [f"# Sweep {m['name']}", "", f"seeds: {m['seeds']}", "",
             "| student | teacher | suite | category | mean | 95% CI | teacher acc | teacher tokens |",
             "|---|---|---|---|---|---|---|---|"]
    for r in m["matrix"]:
        ta = r.get("teacher_accuracy")
        tt = r.get("mean_completion_tokens")
        lines.append(f"| {r['student']} | {r['teacher']} | {r['suite']} | {r['category']} | {r['mean']:.3f} | "
                     f"[{r['ci_low']:.3f}, {r['ci_high']:.3f}] | {'' if ta is None else f'{ta:.2f}'} | "
                     f"{'' if tt is None else f'{tt:.1f}'} |")
    lines += ["", "## Best teacher per student and category", "",
              "| student | category | best | score | runner-up | diff [95% CI] | p | significant |",
              "|---|---|---|---|---|---|---|---|"]
    for b in m["best"]:
        if "runner_up" in b:
            lines.append(f"| {b['student']} | {b['category']} | {b['best']} | {b['score']:.3f} | {b['runner_up']} | "
                         f"{b['diff']:+.3f} [{b['diff_ci'][0]:+.3f}, {b['diff_ci'][1]:+.3f}] | {b['p_value']:.3g} | "
                         f"{'yes' if b['significant'] else 'no'} |")
        else:
            lines.append(f"| {b['student']} | {b['category']} | {b['best']} | {b['score']:.3f} | - | - | - | - |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------- driver

def _worker_setup(spec_dump: dict) -> SweepSpec:
    import torch

    torch.set_num_threads(1)
    return SweepSpec.model_validate(spec_dump, context={"check_files": False})


def _base_worker(spec_dump: dict, student: str, out: str, quick: bool) -> str:
    spec = _worker_setup(spec_dump)
    st = next(s for s in spec.students if s.name == student)
    return base_model(spec, st, Path(out), spec.quick.base_overrides if quick else [])


def _cell_worker(spec_dump: dict, student: str, teacher: str, seed: int, data: dict, out: str, quick: bool) -> dict:
    spec = _worker_setup(spec_dump)
    st = next(s for s in spec.students if s.name == student)
    return run_cell(spec, st, teacher, seed, data, Path(out), quick, progress=False)


def prepare(spec: SweepSpec, out: Path, quick: bool = False, progress: bool = True) -> dict:
    """Teacher data and base models: what every cell shares. Run it once before separate `--cell` jobs."""
    data = teacher_data(spec, out, progress)
    for st in spec.students:
        base_model(spec, st, out, spec.quick.base_overrides if quick else [])
    return data


def run_sweep(spec: SweepSpec, out: Path, resume: bool = False, quick: bool = False, only: list[str] = (),
              progress: bool = True, jobs: int | None = None) -> dict:
    from rich.progress import Progress

    out.mkdir(parents=True, exist_ok=True)
    state_path = out / "state.json"
    if not resume and (state_path.exists() or finished_cells(out)):
        raise UserError(f"{out} already holds a sweep; pass --resume to continue it or choose another "
                        f"--output-dir", str(state_path), 1)
    state = {"cells": finished_cells(out)}
    write_json(out / "sweep.json", spec.model_dump(mode="json"))
    seeds = spec.quick.seeds if quick else spec.seeds
    data = teacher_data(spec, out, progress)
    teacher_names = list(data)
    todo = [(st, t, s) for st in spec.students for t in teacher_names for s in seeds]
    if only:
        todo = [c for c in todo if cell_id(c[0].name, c[1], c[2]) in only]
        unknown = set(only) - {cell_id(c[0].name, c[1], c[2]) for c in todo}
        if unknown:
            raise UserError(f"--cell {sorted(unknown)[0]!r} is not a cell of this sweep")
    todo = [c for c in todo if cell_id(c[0].name, c[1], c[2]) not in state["cells"]]
    jobs = min(jobs or spec.jobs, max(1, len(todo)))
    if jobs > 1:  # base models first (shared by the cells), two at a time
        with ProcessPoolExecutor(jobs, mp_context=mp.get_context("spawn")) as pool:
            list(pool.map(_base_worker, [spec.model_dump(mode="json")] * len(spec.students),
                          [st.name for st in spec.students], [str(out)] * len(spec.students),
                          [quick] * len(spec.students)))
    with Progress(disable=not progress) as bar:
        task = bar.add_task("sweep cells", total=len(todo))
        if jobs == 1:
            for student, teacher, seed in todo:
                cell = run_cell(spec, student, teacher, seed, data, out, quick, progress=False)
                state["cells"][cell["id"]] = cell
                write_json(state_path, {"cells": finished_cells(out)})
                bar.advance(task)
        else:
            with ProcessPoolExecutor(jobs, mp_context=mp.get_context("spawn")) as pool:
                futures = [pool.submit(_cell_worker, spec.model_dump(mode="json"), st.name, t, s, data, str(out),
                                       quick) for st, t, s in todo]
                for fut in as_completed(futures):
                    cell = fut.result()
                    state["cells"][cell["id"]] = cell
                    write_json(state_path, {"cells": finished_cells(out)})
                    bar.advance(task)
    cells = [state["cells"][cell_id(st.name, t, s)] for st, t, s in
             [(st, t, s) for st in spec.students for t in teacher_names for s in seeds]
             if cell_id(st.name, t, s) in state["cells"]]
    matrix = build_matrix(spec, out, cells, {t: {k: v for k, v in d.items() if k != "sft"} for t, d in data.items()},
                          seeds)
    write_json(out / "matrix.json", matrix)
    (out / "matrix.md").write_text(matrix_markdown(matrix))
    from hybrid_posttrain.report import build_report

    build_report([str(out)], out / "report", title=f"Teacher sweep: {spec.name}")
    return matrix


def print_summary(matrix: dict, out: Path, seconds: float) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"sweep {matrix['name']}: best teacher per student (seeds {matrix['seeds']})")
    for col in ("student", "category", "best", "score", "runner-up", "diff [95% CI]", "p"):
        table.add_column(col)
    for b in matrix["best"]:
        table.add_row(b["student"], b["category"], b["best"], f"{b['score']:.3f}", b.get("runner_up", "-"),
                      f"{b['diff']:+.3f} [{b['diff_ci'][0]:+.3f}, {b['diff_ci'][1]:+.3f}]" if "diff" in b else "-",
                      f"{b['p_value']:.3g}{' *' if b.get('significant') else ''}" if "p_value" in b else "-")
    con = Console(width=160)
    con.print(table)
    con.print(f"matrix: {out / 'matrix.md'}\nreport: {out / 'report' / 'report.html'}\nwall time: {seconds:.0f} s")


def main(args) -> int:
    from hybrid_posttrain.recipe import load_spec

    spec = load_spec(args.sweep, kind="sweep")
    out = Path(args.output_dir or spec.output_dir.format(name=spec.name))
    t0 = time.time()
    if args.prepare:
        prepare(spec, out, quick=args.quick)
        print(f"prepared {out}: teacher data and base models; now run the cells (--resume --cell ID)")
        return 0
    matrix = run_sweep(spec, out, resume=args.resume, quick=args.quick, only=args.cell, jobs=args.jobs)
    print_summary(matrix, out, time.time() - t0)
    return 0
