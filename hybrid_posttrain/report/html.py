"""The self-contained HTML page of a report: inline CSS, plots embedded as base64 PNG, no network.

A small inline script marks the page for automated checks: `<body data-ready="1"
data-images-loaded="K/N">` once every image has loaded (K of N with `naturalWidth > 0`), and
`<html data-js-errors="E">` if a script error occurred, `data-resource-errors="R"` if a resource (an image)
failed to load (tests/report checks these in headless Chromium).
"""

from __future__ import annotations

import base64
import html
import time

from hybrid_posttrain.report.tables import Table

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2em auto;max-width:1200px;color:#222;
padding:0 1em}
h1{font-size:1.6em;margin-bottom:.2em}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.6em 0;font-size:.85em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left;vertical-align:top}
th{background:#f3f3f3}tr:nth-child(even) td{background:#fafafa}
figure{margin:1em 0}figcaption{font-size:.85em;color:#555}img{max-width:100%;height:auto}
.note{font-size:.85em;color:#555}.meta{color:#666;font-size:.85em}
"""

HEAD_SCRIPT = """
(function(){var js=0,res=0;window.addEventListener('error',function(e){
var root=document.documentElement;
if(e instanceof ErrorEvent){js+=1;root.setAttribute('data-js-errors',String(js));}
else{res+=1;root.setAttribute('data-resource-errors',String(res));}},true);})();
"""

TAIL_SCRIPT = """
(function(){
  function check(){
    var imgs=Array.prototype.slice.call(document.images);
    var ok=imgs.filter(function(i){return i.complete&&i.naturalWidth>0;}).length;
    document.body.setAttribute('data-images-loaded',ok+'/'+imgs.length);
    document.body.setAttribute('data-ready','1');
  }
  if(document.readyState==='complete'){check();}else{window.addEventListener('load',check);}
})();
"""


def table_html(t: Table) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in t.header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in t.rows)
    note = f'<p class="note">{html.escape(t.note)}</p>' if t.note else ""
    return f"<h2>{html.escape(t.title)}</h2><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{note}"


def render_html(title: str, inputs: list[str], tables: list[Table], plots: dict[str, tuple[str, bytes]]) -> str:
    parts = [f"<h1>{html.escape(title)}</h1>",
             f'<p class="meta">Generated {time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())} from '
             f'{html.escape(", ".join(inputs))}</p>']
    first, rest = tables[:1], tables[1:]
    parts += [table_html(t) for t in first]
    for name, (cap, png) in plots.items():
        b64 = base64.b64encode(png).decode("ascii")
        parts.append(f'<h2>{html.escape(cap)}</h2><figure id="plot-{name}"><img alt="{html.escape(cap)}" '
                     f'src="data:image/png;base64,{b64}"><figcaption>{html.escape(cap)}</figcaption></figure>')
    parts += [table_html(t) for t in rest]
    if not tables and not plots:
        parts.append("<p>Nothing to show.</p>")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{html.escape(title)}</title>"
            f"<style>{CSS}</style><script>{HEAD_SCRIPT}</script></head><body>\n"
            + "\n".join(parts) + f"\n<script>{TAIL_SCRIPT}</script>\n</body></html>\n")
