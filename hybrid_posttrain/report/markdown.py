"""The Markdown summary of a report: the same tables as the HTML page, and links to the plot PNGs
written beside it (`plots/<name>.png`)."""

from __future__ import annotations

import time

from hybrid_posttrain.report.tables import Table


def _cell(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", " ")


def table_md(t: Table) -> str:
    lines = [f"## {t.title}", "", "| " + " | ".join(_cell(h) for h in t.header) + " |",
             "|" + "|".join("---" for _ in t.header) + "|"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in t.rows]
    if t.note:
        lines += ["", f"_{t.note}_"]
    return "\n".join(lines) + "\n"


def render_markdown(title: str, inputs: list[str], tables: list[Table], plot_files: dict[str, tuple[str, str]]) -> str:
    out = [f"# {title}", "", f"Generated {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} from "
           f"{', '.join(f'`{i}`' for i in inputs)}.", ""]
    out += [table_md(t) for t in tables[:1]]
    for _name, (cap, rel) in plot_files.items():
        out += [f"## {cap}", "", f"![{cap}]({rel})", ""]
    out += [table_md(t) for t in tables[1:]]
    return "\n".join(out)
