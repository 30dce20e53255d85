"""`hpt report DIR... --out DIR`: an HTML page and a Markdown summary from artifacts only.

Inputs are run dirs (`eval/summary.json`, `metrics.jsonl`, `manifest.json`), eval output dirs
(`summary.json`), sweep dirs (`matrix.json`: per-cell summaries) and folders holding teacher manifests;
see `collect.py`. Output:

    <out>/report.html      self-contained (inline CSS, plots as base64 PNG): opens offline
    <out>/report.md        the same tables, linking the PNGs below
    <out>/plots/<name>.png knowledge vs reasoning, bars per suite, accuracy vs depth, training curves,
                           teacher statistics (those the inputs support)

Shown: knowledge vs reasoning per model, every suite's score with its 95% interval, reasoning accuracy
by depth, paired differences against the first model on shared items, training curves, teacher manifest
statistics and run manifests.
"""

from __future__ import annotations

from pathlib import Path

from hybrid_posttrain.data.io import atomic_write_text


def build_report(dirs: list[str], out: str | Path, title: str = "hybrid-posttrain report") -> dict[str, Path]:
    """Write the report of `dirs` into `out`; returns the paths written."""
    from hybrid_posttrain.report.collect import collect
    from hybrid_posttrain.report.html import render_html
    from hybrid_posttrain.report.markdown import render_markdown
    from hybrid_posttrain.report.plots import render_all
    from hybrid_posttrain.report.tables import all_tables

    data = collect(dirs)
    tables = all_tables(data)
    plots = render_all(data)
    out = Path(out)
    written: dict[str, Path] = {}
    plot_files = {}
    for name, (cap, png) in plots.items():
        p = out / "plots" / f"{name}.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_suffix(".png.tmp")
        tmp.write_bytes(png)
        tmp.replace(p)
        plot_files[name] = (cap, f"plots/{name}.png")
        written[f"plot:{name}"] = p
    inputs = [str(d) for d in dirs]
    atomic_write_text(out / "report.html", render_html(title, inputs, tables, plots))
    atomic_write_text(out / "report.md", render_markdown(title, inputs, tables, plot_files))
    written["html"] = out / "report.html"
    written["markdown"] = out / "report.md"
    return written


def main(args) -> int:
    written = build_report(args.dirs, args.out)
    n_plots = sum(k.startswith("plot:") for k in written)
    print(f"wrote {written['html']} and {written['markdown']} ({n_plots} plots)")
    return 0
