"""Collect what a report shows from artifacts only (never from code that trains or evaluates).

Inputs are folders:

* a run dir: `eval/summary.json` (or `summary.json` when the folder is an eval output dir),
  `metrics.jsonl` (training curves: rows `{"step", "loss", ...}`, optionally `"stage"`), `manifest.json`;
* a sweep dir: `matrix.json`, a list of per-cell entries (or `{"cells": [...], "matrix": [...],
  "best": [...]}` as `hpt sweep` writes it), each cell with `teacher`, `student`, `seed` and either an
  inline `summary` (the `summary.json` of `hpt eval`) or a `run_dir` / `eval_dir` / `summary_path`
  (relative to the sweep dir) to read it from; cell run dirs also give training curves. The sweep's own
  aggregates (`matrix`: mean over seeds with a seeds-then-items bootstrap interval; `best`: best teacher
  per student and category with its paired test) replace the report's simpler group intervals;
* any folder holding teacher manifests (`manifest.json` with a `"teacher"` key, written by
  `hpt generate`) anywhere below it; a folder with none of the above is searched one level down for run
  dirs (so `hpt report runs/* --out ...` and `hpt report runs --out ...` both work).

`collect(dirs)` returns a `ReportData`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from hybrid_posttrain.data.io import iter_jsonl, read_json
from hybrid_posttrain.errors import UserError


@dataclass
class ModelResult:
    """One evaluated model (a run, or one sweep cell)."""

    label: str
    suites: dict[str, dict]
    eval_dir: Path | None = None  # holds <suite>/results.jsonl for paired comparisons
    teacher: str | None = None
    student: str | None = None
    seed: int | None = None
    source: str = ""

    @property
    def group(self) -> str:
        """Seeds of one (teacher, student) pair form a group."""
        if self.teacher is None and self.student is None:
            return self.label
        return f"{self.teacher or '-'} → {self.student or '-'}"


@dataclass
class ReportData:
    models: list[ModelResult] = field(default_factory=list)
    curves: dict[str, list[dict]] = field(default_factory=dict)  # run label -> metrics rows
    teachers: list[dict] = field(default_factory=list)  # teacher manifests (with "_path")
    runs: dict[str, dict] = field(default_factory=dict)  # run label -> run manifest
    sweep_rows: list[dict] = field(default_factory=list)  # matrix.json "matrix": hierarchical (seeds, items) CIs
    sweep_best: list[dict] = field(default_factory=list)  # matrix.json "best": best teacher + paired test

    def group_override(self, group: str, suite: str) -> dict | None:
        """The sweep's own seeds-and-items interval of a (teacher -> student) group on a suite, if any."""
        for r in self.sweep_rows:
            if f"{r['teacher']} → {r['student']}" == group and r["suite"] == suite:
                return {"value": r["mean"], "ci_low": r.get("ci_low", r["mean"]),
                        "ci_high": r.get("ci_high", r["mean"])}
        return None


def _read_metrics(path: Path) -> list[dict]:
    return [row for _, row in iter_jsonl(path, tolerate_partial_last=True)]


def _summary_suites(summary: dict, path: Path) -> dict[str, dict]:
    suites = summary.get("suites") if isinstance(summary, dict) else None
    if not isinstance(suites, dict):
        raise UserError("not an eval summary: expected {\"suites\": {name: {...}}} (written by hpt eval)", str(path), 1)
    return suites


def _label(path: Path, taken: set[str]) -> str:
    base = path.name if path.name not in ("eval", "final", "") else path.parent.name
    label, k = base, 2
    while label in taken:
        label = f"{base}-{k}"
        k += 1
    return label


def _teacher_manifests(root: Path, out: list[dict], seen: set[Path]) -> None:
    for p in sorted(root.rglob("manifest.json")):
        if any(part.startswith("checkpoint") for part in p.parts) or p.resolve() in seen:
            continue
        try:
            m = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(m, dict) and "teacher" in m:
            seen.add(p.resolve())
            out.append(dict(m, _path=str(p)))


def _rel(base: Path, raw: str) -> Path:
    """A path from matrix.json: relative to the sweep dir (as `hpt sweep` writes them), else as given."""
    p = Path(raw)
    if p.is_absolute() or not (base / p).exists():
        return p
    return base / p


def _sweep(d: Path, data: ReportData, taken: set[str]) -> None:
    path = d / "matrix.json"
    matrix = read_json(path)
    cells = matrix.get("cells") if isinstance(matrix, dict) else matrix
    if isinstance(matrix, dict):
        # the sweep's own aggregates: per (student, teacher, suite) over seeds and items, and best teachers
        for r in matrix.get("matrix") or []:
            if isinstance(r, dict) and {"student", "teacher", "suite", "mean"} <= set(r):
                data.sweep_rows.append(r)
        data.sweep_best += [b for b in matrix.get("best") or [] if isinstance(b, dict)]
    if not isinstance(cells, list):
        raise UserError("matrix.json must be a list of cells or {\"cells\": [...]}", str(path), 1)
    for i, cell in enumerate(cells):
        if not isinstance(cell, dict):
            raise UserError(f"cell {i} of matrix.json is not an object", str(path), 1)
        summary = cell.get("summary")
        eval_dir = None
        run_dir = None
        if cell.get("run_dir"):
            run_dir = _rel(d, cell["run_dir"])
        if summary is None:
            for key in ("summary_path", "eval_dir"):
                if cell.get(key):
                    p = _rel(d, cell[key])
                    p = p / "summary.json" if p.is_dir() or key == "eval_dir" else p
                    if p.exists():
                        summary = read_json(p)
                        eval_dir = p.parent
            if summary is None and run_dir is not None and (run_dir / "eval" / "summary.json").exists():
                eval_dir = run_dir / "eval"
                summary = read_json(eval_dir / "summary.json")
        elif run_dir is not None and (run_dir / "eval").is_dir():
            eval_dir = run_dir / "eval"
        name = str(cell.get("id") or cell.get("cell") or "-".join(
            str(cell.get(k)) for k in ("teacher", "student", "seed") if cell.get(k) is not None) or f"cell{i}")
        label = _label(Path(name), taken)
        taken.add(label)
        if summary is not None:
            suites = _summary_suites(summary, path)
            if suites:
                data.models.append(ModelResult(label, suites, eval_dir, cell.get("teacher"), cell.get("student"),
                                               cell.get("seed"), source=str(path)))
        if run_dir is not None and (run_dir / "metrics.jsonl").exists():
            data.curves[label] = _read_metrics(run_dir / "metrics.jsonl")


def _run(d: Path, data: ReportData, taken: set[str]) -> bool:
    """Read one run / eval dir; False when it holds nothing a report shows."""
    found = False
    label = _label(d, taken)
    for summ in (d / "eval" / "summary.json", d / "summary.json"):
        if summ.exists():
            suites = _summary_suites(read_json(summ), summ)
            data.models.append(ModelResult(label, suites, summ.parent, source=str(summ)))
            found = True
            break
    if (d / "metrics.jsonl").exists():
        data.curves[label] = _read_metrics(d / "metrics.jsonl")
        found = True
    man = d / "manifest.json"
    if man.exists():
        m = read_json(man)
        if isinstance(m, dict) and "teacher" not in m:
            data.runs[label] = m
            found = True
    if found:
        taken.add(label)
    return found


def collect(dirs: list[str | Path]) -> ReportData:
    data = ReportData()
    taken: set[str] = set()
    seen_manifests: set[Path] = set()
    for raw in dirs:
        d = Path(raw)
        if not d.is_dir():
            raise UserError(f"report input {str(d)!r} is not a folder (give run dirs, eval dirs or sweep dirs)",
                            str(d), 1)
        n_before = (len(data.models), len(data.curves), len(data.runs), len(data.teachers))
        if (d / "matrix.json").exists():
            _sweep(d, data, taken)
        elif not _run(d, data, taken):
            for sub in sorted(p for p in d.iterdir() if p.is_dir()):
                if (sub / "matrix.json").exists():
                    _sweep(sub, data, taken)
                else:
                    _run(sub, data, taken)
        _teacher_manifests(d, data.teachers, seen_manifests)
        if (len(data.models), len(data.curves), len(data.runs), len(data.teachers)) == n_before:
            raise UserError(f"nothing to report in {d}: no eval/summary.json, summary.json, metrics.jsonl, "
                            f"matrix.json or teacher manifest.json (run `hpt eval` first?)", str(d), 1)
    return data


def suite_rows(model: ModelResult, suite: str) -> list[dict] | None:
    """The per-item rows of `suite` for `model`, when its eval dir kept them."""
    if model.eval_dir is None:
        return None
    p = model.eval_dir / suite / "results.jsonl"
    if not p.exists():
        return None
    return [row for _, row in iter_jsonl(p, tolerate_partial_last=True)]
