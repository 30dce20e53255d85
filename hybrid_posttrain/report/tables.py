"""The report's tables, as plain data (header + rows of strings) shared by the HTML and Markdown writers.

* `summary_table`: one row per model (or per teacher -> student group of a sweep), one column per suite
  (`value [ci_low, ci_high]`), plus the knowledge and reasoning means.
* `depth_table`: accuracy by depth for the suites that report it.
* `paired_table`: each model against the first one on the same items (`evaluation.scoring.paired_test`:
  difference, paired bootstrap 95% CI, p-value), when per-item results are there.
* `teacher_table` / `run_table`: teacher manifest statistics and run manifests.
"""

from __future__ import annotations

from dataclasses import dataclass

from hybrid_posttrain.evaluation.scoring import paired_test, scores_by_id
from hybrid_posttrain.report.collect import ReportData, suite_rows
from hybrid_posttrain.report.plots import CATEGORIES, category_score, group_entry, groups, suite_order


@dataclass
class Table:
    title: str
    header: list[str]
    rows: list[list[str]]
    note: str = ""


def _ci(v: float, lo: float, hi: float) -> str:
    return f"{v:.3f} [{lo:.3f}, {hi:.3f}]"


def _num(x, fmt: str = "{:.3f}") -> str:
    if x is None:
        return "–"
    if isinstance(x, (int, float)):
        return fmt.format(x)
    return str(x)


def summary_table(data: ReportData) -> Table | None:
    suites = suite_order(data.models)
    if not suites:
        return None
    gs = groups(data.models)
    multi = any(len(v) > 1 for v in gs.values())
    header = ["model"] + (["seeds"] if multi else []) + [f"{s} ({_metric(data, s)})" for s in suites] + \
        [f"{c} mean" for c in CATEGORIES]
    rows = []
    for g, members in gs.items():
        row = [g] + ([str(len(members))] if multi else [])
        for s in suites:
            e = group_entry(members, s, data)
            row.append(_ci(e["value"], e["ci_low"], e["ci_high"]) + f" n={e['n']}" if e else "–")
        for c in CATEGORIES:
            sc = [category_score(m, c) for m in members]
            sc = [x for x in sc if x]
            row.append(_ci(*[sum(x[i] for x in sc) / len(sc) for i in range(3)]) if sc else "–")
        rows.append(row)
    note = "95% bootstrap confidence intervals over items."
    if multi and data.sweep_rows:
        note += (" A group's value is the mean over its seeds; its interval the sweep's bootstrap over seeds then"
                 " items (category means: the mean of the seeds' intervals).")
    elif multi:
        note += " A group's value is the mean over its seeds; its interval the mean of the seeds' intervals."
    return Table("Scores", header, rows, note)


def _metric(data: ReportData, suite: str) -> str:
    for m in data.models:
        if suite in m.suites:
            return str(m.suites[suite].get("metric", ""))
    return ""


def depth_table(data: ReportData) -> list[Table]:
    out = []
    for s in suite_order(data.models):
        depths = sorted({int(d) for m in data.models for d in (m.suites.get(s, {}).get("by_depth") or {})})
        if not depths:
            continue
        rows = []
        for g, members in groups(data.models).items():
            row = [g]
            for d in depths:
                es = [m.suites[s]["by_depth"].get(str(d)) for m in members if s in m.suites
                      and m.suites[s].get("by_depth")]
                es = [e for e in es if e]
                row.append(f"{sum(e['value'] for e in es) / len(es):.2f}" if es else "–")
            rows.append(row)
        out.append(Table(f"{s}: accuracy by depth", ["model"] + [str(d) for d in depths], rows))
    return out


def paired_table(data: ReportData, max_models: int = 24) -> Table | None:
    # runs given one by one (a sweep's cells are compared by the sweep's own best-teacher tests)
    models = [m for m in data.models if m.eval_dir is not None and m.teacher is None and m.student is None]
    models = models[:max_models]
    if len(models) < 2:
        return None
    base = models[0]
    rows = []
    for s in suite_order(models):
        a_rows = suite_rows(base, s)
        if not a_rows:
            continue
        score = "correct"
        for m in models[1:]:
            b_rows = suite_rows(m, s)
            if not b_rows:
                continue
            r = paired_test(scores_by_id(b_rows, score), scores_by_id(a_rows, score))
            if r["n"] == 0:
                continue
            rows.append([s, m.label, base.label, str(r["n"]), f"{r['diff']:+.3f}",
                         f"[{r['ci_low']:+.3f}, {r['ci_high']:+.3f}]", f"{r['p_value']:.3g}", r["test"]])
    if not rows:
        return None
    return Table(f"Paired comparisons against {base.label}", ["suite", "model", "baseline", "shared items",
                                                             "difference", "95% CI", "p-value", "test"], rows,
                 "Difference = model minus baseline on the items both answered; paired bootstrap interval.")


def best_table(data: ReportData) -> Table | None:
    """The sweep's best teacher per student and category, against the runner-up (paired test)."""
    if not data.sweep_best:
        return None
    rows = []
    for b in data.sweep_best:
        if "runner_up" in b:
            ci = b.get("diff_ci") or [float("nan"), float("nan")]
            rows.append([str(b.get("student")), str(b.get("category")), str(b.get("best")), _num(b.get("score")),
                         str(b["runner_up"]), f"{b['diff']:+.3f} [{ci[0]:+.3f}, {ci[1]:+.3f}]",
                         _num(b.get("p_value"), "{:.3g}"), "yes" if b.get("significant") else "no"])
        else:
            rows.append([str(b.get("student")), str(b.get("category")), str(b.get("best")), _num(b.get("score")),
                         "–", "–", "–", "–"])
    return Table("Best teacher per student", ["student", "category", "best teacher", "score", "runner-up",
                                              "difference [95% CI]", "p-value", "significant (p<0.05)"], rows,
                 "Paired test of the best against the runner-up on the same items and seeds.")


def teacher_table(data: ReportData) -> Table | None:
    if not data.teachers:
        return None
    rows = []
    for t in data.teachers:
        counts = t.get("counts") or {}
        toks = t.get("tokens") or {}
        acc = (t.get("accuracy") or {}).get("overall")
        thr = t.get("throughput") or {}
        rows.append([str(t.get("teacher")), str(t.get("backend", "–")), _num(counts.get("samples"), "{}"),
                     _num(t.get("failure_rate"), "{:.3f}"), _num(acc), _num(toks.get("mean"), "{:.1f}"),
                     _num(toks.get("p95"), "{:.0f}"), _num(thr.get("tokens_per_s"), "{:.0f}"),
                     str(t.get("_path", ""))])
    return Table("Teachers", ["teacher", "backend", "samples", "failure rate", "accuracy", "tokens mean",
                              "tokens p95", "tokens/s", "manifest"], rows)


def run_table(data: ReportData) -> Table | None:
    if not data.runs:
        return None
    rows = []
    for label, m in data.runs.items():
        rows.append([label, _num(m.get("seed"), "{}"), _num(m.get("wall_time_s"), "{:.1f}"),
                     _num(m.get("train_tokens"), "{}"), _num(m.get("tokens_per_s"), "{:.1f}"),
                     str(m.get("git_commit") or "–")[:10], str(m.get("finished_at", "–"))])
    return Table("Runs", ["run", "seed", "wall time (s)", "train tokens", "tokens/s", "commit", "finished"], rows)


def all_tables(data: ReportData) -> list[Table]:
    out = [summary_table(data), best_table(data)] + depth_table(data) + [paired_table(data), teacher_table(data),
                                                                          run_table(data)]
    return [t for t in out if t is not None]
