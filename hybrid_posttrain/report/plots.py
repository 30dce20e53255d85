"""Plots of a report, drawn with matplotlib (Agg, offline) and returned as PNG bytes.

* `knowledge_vs_reasoning`: one point per model (sweep cells coloured by teacher -> student group): mean
  knowledge-suite score against mean reasoning-suite score, with the suites' 95% intervals as error bars.
* `suite_bars`: per suite, one bar per group with its 95% interval (seeds of a group shown as dots).
* `depth_curves`: reasoning accuracy against program depth with 95% bands.
* `training_curves`: loss (and reward / eval loss when logged) against step for every run.
* `teacher_stats`: teacher accuracy (overall and by depth) and completion lengths from their manifests.

A group's value is the mean over its seeds; its interval is the mean of the seeds' interval bounds (the
typical single-seed uncertainty, stated as such in the report). A category score is the mean of its
suites' values, its interval the mean of their bounds.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

from hybrid_posttrain.report.collect import ModelResult, ReportData

CATEGORIES = ("knowledge", "reasoning")
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf"]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    _plt().close(fig)
    return buf.getvalue()


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and not (isinstance(x, float) and math.isnan(x))


def category_score(model: ModelResult, category: str) -> tuple[float, float, float] | None:
    """(value, ci_low, ci_high) of a category: mean over its suites of value and interval bounds."""
    es = [e for e in model.suites.values() if e.get("category") == category and _finite(e.get("value"))]
    if not es:
        return None
    n = len(es)
    return (sum(e["value"] for e in es) / n, sum(e.get("ci_low", e["value"]) for e in es) / n,
            sum(e.get("ci_high", e["value"]) for e in es) / n)


def groups(models: Sequence[ModelResult]) -> dict[str, list[ModelResult]]:
    out: dict[str, list[ModelResult]] = {}
    for m in models:
        out.setdefault(m.group, []).append(m)
    return out


def group_entry(members: Sequence[ModelResult], suite: str, data: ReportData | None = None) -> dict | None:
    """A group's score on a suite: mean over its seeds; the interval is the sweep's own (seeds and items)
    when `data` holds one, else the mean of the seeds' bounds."""
    es = [m.suites[suite] for m in members if suite in m.suites and _finite(m.suites[suite].get("value"))]
    if not es:
        return None
    n = len(es)
    out = {"value": sum(e["value"] for e in es) / n, "ci_low": sum(e.get("ci_low", e["value"]) for e in es) / n,
           "ci_high": sum(e.get("ci_high", e["value"]) for e in es) / n, "n": es[0].get("n"),
           "seeds": [e["value"] for e in es], "category": es[0].get("category"), "metric": es[0].get("metric"),
           "interval": "seeds-mean"}
    over = data.group_override(members[0].group, suite) if data is not None else None
    if over is not None:
        out.update(over, interval="sweep")
    return out


def suite_order(models: Sequence[ModelResult]) -> list[str]:
    """Knowledge suites first, then reasoning, each in first-seen order."""
    seen: dict[str, str] = {}
    for m in models:
        for name, e in m.suites.items():
            seen.setdefault(name, e.get("category", ""))
    return sorted(seen, key=lambda s: (CATEGORIES.index(seen[s]) if seen[s] in CATEGORIES else 2,
                                       list(seen).index(s)))


def _colours(keys: Sequence[str]) -> dict[str, str]:
    return {k: PALETTE[i % len(PALETTE)] for i, k in enumerate(keys)}


def knowledge_vs_reasoning(data: ReportData) -> bytes | None:
    pts = []
    for m in data.models:
        k, r = category_score(m, "knowledge"), category_score(m, "reasoning")
        if k and r:
            pts.append((m, k, r))
    if not pts:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 5.0))
    colours = _colours(list(dict.fromkeys(m.group for m, _, _ in pts)))
    students = list(dict.fromkeys(m.student for m, _, _ in pts))
    markers = "osD^v<>ph*"
    labelled: set[str] = set()
    for m, k, r in pts:
        c = colours[m.group]
        ax.errorbar(k[0], r[0], xerr=[[k[0] - k[1]], [k[2] - k[0]]], yerr=[[r[0] - r[1]], [r[2] - r[0]]],
                    fmt=markers[students.index(m.student) % len(markers)], color=c, ecolor=c, alpha=0.85,
                    capsize=3, ms=8, label=None if m.group in labelled else m.group)
        labelled.add(m.group)
        if len(pts) <= 12:
            ax.annotate(m.label, (k[0], r[0]), textcoords="offset points", xytext=(6, 5), fontsize=8)
    ax.set_xlabel("knowledge (mean of knowledge suites)")
    ax.set_ylabel("reasoning (mean of reasoning suites)")
    lo = min(0.0, min(min(k[1], r[1]) for _, k, r in pts))
    hi = max(1.0, max(max(k[2], r[2]) for _, k, r in pts))
    ax.set_xlim(lo - 0.03, hi + 0.03)
    ax.set_ylim(lo - 0.03, hi + 0.03)
    ax.plot([0, 1], [0, 1], ls=":", color="#999", lw=1)
    ax.grid(alpha=0.3)
    ax.set_title("Knowledge vs reasoning (95% CIs)")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _png(fig)


def suite_bars(data: ReportData) -> bytes | None:
    suites = suite_order(data.models)
    gs = groups(data.models)
    if not suites or not gs:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(6.4, 1.2 * len(suites) * max(1, len(gs)) ** 0.5 + 2), 4.4))
    names = list(gs)
    colours = _colours(names)
    width = 0.8 / len(names)
    for j, g in enumerate(names):
        xs, ys, lo, hi = [], [], [], []
        for i, s in enumerate(suites):
            e = group_entry(gs[g], s, data)
            if e is None:
                continue
            x = i - 0.4 + width * (j + 0.5)
            xs.append(x)
            ys.append(e["value"])
            lo.append(max(0.0, e["value"] - e["ci_low"]))
            hi.append(max(0.0, e["ci_high"] - e["value"]))
            if len(e["seeds"]) > 1:
                ax.plot([x] * len(e["seeds"]), e["seeds"], "k.", ms=3, alpha=0.7)
        ax.bar(xs, ys, width * 0.92, yerr=[lo, hi], capsize=3, color=colours[g], label=g, alpha=0.9)
    ax.set_xticks(range(len(suites)))
    cats = {s: next((m.suites[s].get("category", "") for m in data.models if s in m.suites), "") for s in suites}
    ax.set_xticklabels([f"{s}\n({cats[s]})" for s in suites], fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("score (95% CI)")
    ax.grid(axis="y", alpha=0.3)
    ax.set_title("Score per suite")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _png(fig)


def depth_curves(data: ReportData) -> bytes | None:
    suites = [s for s in suite_order(data.models) if any(s in m.suites and m.suites[s].get("by_depth")
                                                          for m in data.models)]
    if not suites:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, len(suites), figsize=(6.4 * len(suites), 4.2), squeeze=False)
    gs = groups(data.models)
    colours = _colours(list(gs))
    for ax, s in zip(axes[0], suites, strict=True):
        for g, members in gs.items():
            per_depth: dict[int, list[dict]] = {}
            for m in members:
                for d, e in (m.suites.get(s, {}).get("by_depth") or {}).items():
                    per_depth.setdefault(int(d), []).append(e)
            if not per_depth:
                continue
            ds = sorted(per_depth)
            val = [sum(e["value"] for e in per_depth[d]) / len(per_depth[d]) for d in ds]
            lo = [sum(e.get("ci_low", e["value"]) for e in per_depth[d]) / len(per_depth[d]) for d in ds]
            hi = [sum(e.get("ci_high", e["value"]) for e in per_depth[d]) / len(per_depth[d]) for d in ds]
            ax.plot(ds, val, "o-", color=colours[g], label=g, ms=4)
            ax.fill_between(ds, lo, hi, color=colours[g], alpha=0.15)
        ax.set_xlabel("program depth")
        ax.set_ylabel("accuracy (95% CI)")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.set_title(f"{s}: accuracy vs depth")
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _png(fig)


SECOND_CURVE_KEYS = ("reward", "eval_loss", "rewards/mean", "kl", "grad_norm")


def training_curves(data: ReportData) -> bytes | None:
    runs = {k: [r for r in v if _finite(r.get("loss")) and _finite(r.get("step"))] for k, v in data.curves.items()}
    runs = {k: v for k, v in runs.items() if v}
    if not runs:
        return None
    second = next((key for key in SECOND_CURVE_KEYS if any(_finite(r.get(key)) for v in data.curves.values()
                                                           for r in v)), None)
    plt = _plt()
    ncols = 2 if second else 1
    fig, axes = plt.subplots(1, ncols, figsize=(6.4 * ncols, 4.0), squeeze=False)
    colours = _colours(list(data.curves))
    styles = ["-", "--", ":", "-."]
    for ax, key in zip(axes[0], ["loss", second] if second else ["loss"], strict=True):
        for run, rows in data.curves.items():
            pts = [r for r in rows if _finite(r.get(key)) and _finite(r.get("step"))]
            stages = list(dict.fromkeys(str(r.get("stage", "")) for r in pts))
            for si, st in enumerate(stages):
                sp = [r for r in pts if str(r.get("stage", "")) == st]
                lab = f"{run} [{st}]" if st else run
                ax.plot([r["step"] for r in sp], [r[key] for r in sp], styles[si % len(styles)],
                        color=colours[run], label=lab, lw=1.4)
        ax.set_xlabel("step")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
        ax.set_title(f"Training {key}")
        if len(data.curves) <= 12:
            ax.legend(fontsize=7)
    return _png(fig)


def teacher_stats(data: ReportData) -> bytes | None:
    ts = [t for t in data.teachers if isinstance(t.get("accuracy"), dict) or isinstance(t.get("tokens"), dict)]
    if not ts:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(12.8, 4.0))
    names = [str(t.get("teacher")) for t in ts]
    colours = _colours(names)
    ax = axes[0]
    for t, n in zip(ts, names, strict=True):
        by = (t.get("accuracy") or {}).get("by_depth") or {}
        if by:
            ds = sorted(by, key=lambda d: int(d))
            ax.plot([int(d) for d in ds], [by[d] for d in ds], "o-", color=colours[n], label=n, ms=4)
    ax.set_xlabel("program depth")
    ax.set_ylabel("teacher accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.set_title("Teacher accuracy by depth")
    if ax.lines:
        ax.legend(fontsize=8)
    ax = axes[1]
    means = [float((t.get("tokens") or {}).get("mean") or 0.0) for t in ts]
    p95 = [float((t.get("tokens") or {}).get("p95") or 0.0) for t in ts]
    xs = range(len(ts))
    ax.bar([x - 0.2 for x in xs], means, 0.4, color=[colours[n] for n in names], label="mean")
    ax.bar([x + 0.2 for x in xs], p95, 0.4, color=[colours[n] for n in names], alpha=0.45, label="p95")
    ax.set_xticks(list(xs))
    ax.set_xticklabels(names, fontsize=8, rotation=20)
    ax.set_ylabel("completion tokens")
    ax.set_title("Teacher completion length (mean, p95)")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


PLOTS = {
    "knowledge_vs_reasoning": ("Knowledge vs reasoning", knowledge_vs_reasoning),
    "suites": ("Score per suite", suite_bars),
    "depth": ("Reasoning accuracy vs depth", depth_curves),
    "training": ("Training curves", training_curves),
    "teachers": ("Teacher statistics", teacher_stats),
}


def render_all(data: ReportData) -> dict[str, tuple[str, bytes]]:
    """{plot name: (title, PNG bytes)} for the plots the data supports."""
    out = {}
    for name, (title, fn) in PLOTS.items():
        png = fn(data)
        if png:
            out[name] = (title, png)
    return out
