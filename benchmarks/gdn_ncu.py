"""Hardware counters of our GDN kernels (Nsight Compute): what each kernel's SM waits on, per kernel, as a table.

`gdn.py` times the kernels; this says why they take that time: the SM's and the memory's throughput against their
peaks, achieved occupancy, issue-slot use, and the warp stall reasons that cost the most cycles per issued
instruction (ncu's WarpStateStats). Two steps, the first on a GPU under ncu (`benchmarks/gpu_check.sh ncu S BxT` runs
both):

    ncu --profile-from-start off --section SpeedOfLight --section Occupancy --section LaunchStats \\
        --section WarpStateStats --section ComputeWorkloadAnalysis -k 'regex:^_(fwd|bwd)' -o REPORT \\
        python benchmarks/gdn_ncu.py run --shape qwen --bt 8x4096
    ncu --import REPORT.ncu-rep --csv --page raw > raw.csv
    python benchmarks/gdn_ncu.py table raw.csv          # no GPU needed

`run` does two warm-up passes, then profiles (cudaProfilerStart / Stop) one no-grad forward and one forward+backward
of ours at the shape (bf16, L2-normalised q / k, as `gdn.py` times them). Bad arguments, a missing file or a CSV
that is not ncu's raw page: one line and exit status 2.
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from benchmarks.train_step import fail, run_script  # noqa: E402  (user errors: one line, exit 2)

STALL = re.compile(r"^smsp__average_warps_issue_stalled_(\w+?)_per_issue_active\.ratio$")
# (column title, ncu raw metric)
COLUMNS = (
    ("SM %", "sm__throughput.avg.pct_of_peak_sustained_elapsed"),
    ("memory %", "gpu__compute_memory_throughput.avg.pct_of_peak_sustained_elapsed"),
    ("DRAM %", "gpu__dram_throughput.avg.pct_of_peak_sustained_elapsed"),
    ("issue busy %", "sm__issue_active.avg.pct_of_peak_sustained_elapsed"),
    ("occupancy %", "sm__warps_active.avg.pct_of_peak_sustained_active"),
    ("registers", "launch__registers_per_thread"),
    ("warp cycles / inst", "smsp__average_warp_latency_per_inst_issued.ratio"),
)
DURATION = "gpu__time_duration.sum"
TO_US = {"ns": 1e-3, "nsecond": 1e-3, "us": 1.0, "usecond": 1.0, "ms": 1e3, "msecond": 1e3, "s": 1e6, "second": 1e6}


def _num(s: str) -> float:
    return float(s.replace(",", ""))


def parse(path: str, top: int = 3) -> list[dict]:
    """ncu's raw CSV page (a header row of metric names, a row of units, one row per profiled kernel) as one dict per
    kernel in launch order: name, us, the COLUMNS values (None where ncu did not collect one), and the `top` stall
    reasons with their cycles per issued instruction, largest first. "warp cycles / inst" is all of them together
    (with the issue cycle): a warp issues once every that many cycles, so at w warps a scheduler the issue slots are
    busy about w / that of the time."""
    try:
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
    except OSError as e:
        fail(f"gdn_ncu.py: {path}: {e.strerror}")
    # ncu may print lines of its own before the table: the header is the first row naming the kernel column
    start = next((i for i, r in enumerate(rows) if "Kernel Name" in r), None)
    if start is None or len(rows) < start + 2:
        fail(f"gdn_ncu.py: {path}: not ncu's raw CSV page (no 'Kernel Name' header and units row)")
    head, units, body = rows[start], rows[start + 1], [r for r in rows[start + 2:] if any(c.strip() for c in r)]
    for n, r in enumerate(body):
        if len(r) != len(head):
            fail(f"gdn_ncu.py: {path}: kernel row {n}: {len(r)} fields, the header has {len(head)}")
    if DURATION not in head:
        fail(f"gdn_ncu.py: {path}: no {DURATION} column (collect the SpeedOfLight section)")
    col = {name: i for i, name in enumerate(head)}
    # "selected" is the issue cycle itself (1.0 an instruction), not a stall
    stalls = [(m[1], i) for i, name in enumerate(head) if (m := STALL.match(name)) and m[1] != "selected"]
    unit = units[col[DURATION]]
    if unit not in TO_US:
        fail(f"gdn_ncu.py: {path}: unknown duration unit {unit!r}")
    out = []
    for n, r in enumerate(body):
        try:
            rec = {"name": r[col["Kernel Name"]], "us": _num(r[col[DURATION]]) * TO_US[unit]}
            for title, metric in COLUMNS:
                rec[title] = _num(r[col[metric]]) if metric in col and r[col[metric]] not in ("", "n/a") else None
            st = [(reason, _num(r[i])) for reason, i in stalls if r[i] not in ("", "n/a")]
        except ValueError as e:
            fail(f"gdn_ncu.py: {path}: kernel row {n}: {e}")
        rec["stalls"] = sorted(st, key=lambda x: -x[1])[:top]
        out.append(rec)
    return out


def table(recs: list[dict]) -> str:
    """The parsed kernels as a markdown table."""
    lines = ["| # | kernel | us | " + " | ".join(t for t, _ in COLUMNS) + " | top stalls (cycles per issued instruction) |",
             "|---|---|---|" + "---|" * len(COLUMNS) + "---|"]
    for i, r in enumerate(recs):
        cells = ["" if r[t] is None else (f"{r[t]:.0f}" if t == "registers" else f"{r[t]:.1f}") for t, _ in COLUMNS]
        st = ", ".join(f"{k} {v:.2f}" for k, v in r["stalls"])
        lines.append(f"| {i} | {r['name']} | {r['us']:.1f} | " + " | ".join(cells) + f" | {st} |")
    return "\n".join(lines)


def run(shape: str, bt: str) -> None:
    """Two warm-up passes, then one no-grad forward and one forward+backward of ours between cudaProfilerStart / Stop."""
    import torch

    from benchmarks.gdn import SHAPES, fb_fn, fwd_fn, make
    from hybrid_posttrain.kernels.gdn import chunk_gated_delta_rule

    if not torch.cuda.is_available():
        fail("gdn_ncu.py run needs a CUDA GPU")
    _, H, HV, K, V = SHAPES[shape]
    B, T = (int(x) for x in bt.split("x"))
    xs, do = make(B, T, H, HV, K, V)
    fwd, fb = fwd_fn(chunk_gated_delta_rule, xs), fb_fn(chunk_gated_delta_rule, xs, do)
    for _ in range(2):
        fwd()
        fb()
    torch.cuda.synchronize()
    torch.cuda.profiler.start()
    fwd()
    fb()
    torch.cuda.synchronize()
    torch.cuda.profiler.stop()


def main():
    from benchmarks.gdn import check_shapes

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="profile one no-grad forward and one forward+backward (under ncu)")
    r.add_argument("--shape", default="qwen")
    r.add_argument("--bt", default="8x4096")
    t = sub.add_parser("table", help="ncu's raw CSV page as a table")
    t.add_argument("csv")
    t.add_argument("--top", type=int, default=3, help="stall reasons a kernel")
    args = ap.parse_args()
    if args.cmd == "run":
        check_shapes("gdn_ncu.py", [args.shape], [args.bt])
        run(args.shape, args.bt)
    else:
        if args.top < 1:
            fail("gdn_ncu.py: --top must be at least 1")
        recs = parse(args.csv, args.top)
        if not recs:
            fail(f"gdn_ncu.py: {args.csv}: no kernel rows")
        print(table(recs))
    return 0


if __name__ == "__main__":
    run_script(main)
