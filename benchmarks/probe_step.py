"""Which part of the fast path makes a training step non-finite: train a few steps of the train-step model
with parts switched off or kernel modules swapped for other versions, each variant in its own process.

    python benchmarks/probe_step.py                                     # default variants, 4 x 4096 and packed
    python benchmarks/probe_step.py --variant "off=attention,rope" --packed --steps 2
    python benchmarks/probe_step.py --variant "swap=hybrid_posttrain.kernels.gdn.chunk:/tmp/chunk_old.py"
    python benchmarks/probe_step.py --variant "gdn=torch" --set num_hidden_layers=4

A variant is a ';'-separated list of ``off=part,part`` (apply_fast_path switches: attention, rope, conv,
gated_norm, rmsnorm, swiglu, fused_ce, gdn_layer), ``gdn=backend`` (hpt, torch, fla) and
``swap=module:path`` (import that file as that module before anything else does; how an older kernel
version from `git show REV:path > file` is tried). Prints, per step: loss, grad norm and the first
parameters whose gradient is not finite. Needs a CUDA GPU (`--smoke`: a tiny model on the CPU). Session 2 found both NaNs of
benchmarks/NOTES_gdn.md with this.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEFAULT_VARIANTS = ["", "gdn=torch", "off=conv", "off=attention,rope"]


def swap(modname: str, path: str) -> None:
    spec = importlib.util.spec_from_file_location(modname, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[modname] = mod
    spec.loader.exec_module(mod)


def parse(variant: str) -> dict:
    out = {"off": [], "gdn": None, "swap": []}
    for item in filter(None, (x.strip() for x in variant.split(";"))):
        key, _, val = item.partition("=")
        if key == "off":
            out["off"] += [v for v in val.split(",") if v]
        elif key == "gdn":
            out["gdn"] = val
        elif key == "swap":
            mod, _, path = val.partition(":")
            out["swap"].append((mod, path))
        else:
            from benchmarks.train_step import fail

            fail(f"probe_step: unknown variant item {item!r} (off=, gdn=, swap=)")
    return out


def run_one(variant: str, packed: bool, steps: int, overrides: dict, smoke: bool = False) -> dict:
    import torch

    v = parse(variant)
    for mod, path in v["swap"]:
        swap(mod, path)
    import benchmarks.train_step as ts
    from hybrid_posttrain.models import fastpath, hybrid

    dev, (batch, seq, doc) = ("cpu", (2, 64, 16)) if smoke else ("cuda", (4, 4096, 2048))
    ts.DEV = dev
    if smoke:
        torch.set_num_threads(1)
    model, _ = ts.build("ours", {**ts.MODEL_1B3, **(ts.SMOKE_MODEL if smoke else {}), **overrides}, "none", 0)
    if v["off"]:
        fastpath.apply_fast_path(model, gdn=None, **{p: False for p in v["off"]})
    if v["gdn"]:
        hybrid.route_hybrid_layers(v["gdn"])
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.1, fused=dev == "cuda")
    rows = []
    for step in range(steps):
        kw = ts.step_inputs(step, batch, seq, model.config.vocab_size, dev, doc if packed else 0)
        out = model(**kw)
        out.loss.backward()
        bad = [n for n, p in model.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
        gn = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        rows.append({"loss": round(out.loss.item(), 4), "gnorm": round(gn.item(), 3), "nonfinite_grads": bad[:3]})
    return {"variant": variant or "default", "packed": packed, "steps": rows,
            "report": fastpath.fast_path_report(model)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--variant", action="append", default=None, help="see the module docstring (repeatable)")
    ap.add_argument("--packed", action="store_true", help="only the packed row (default: both layouts)")
    ap.add_argument("--unpacked", action="store_true", help="only 4 x 4096 rows")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="model config override")
    ap.add_argument("--smoke", action="store_true", help="plumbing check on the CPU with a tiny model")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    from benchmarks.train_step import fail, parse_sets

    overrides = parse_sets(args.set)
    if args.one is not None:
        variant, packed = json.loads(args.one)
        print("RESULT " + json.dumps(run_one(variant, packed, args.steps, overrides, args.smoke)), flush=True)
        return
    if not args.smoke:
        import torch

        if not torch.cuda.is_available():
            fail("probe_step: needs a CUDA GPU (--smoke checks the plumbing on the CPU)")
    variants = args.variant or DEFAULT_VARIANTS
    for variant in variants:  # bad input ends here, not in a child process per variant
        for _mod, path in parse(variant)["swap"]:
            if not Path(path).is_file():
                fail(f"probe_step: swap file {path} not found")
    layouts = [True] if args.packed else [False] if args.unpacked else [False, True]
    for variant in variants:
        for packed in layouts:
            t0 = time.time()
            cmd = [sys.executable, __file__, "--one", json.dumps([variant, packed]), "--steps", str(args.steps)]
            for s in args.set:
                cmd += ["--set", s]
            if args.smoke:
                cmd.append("--smoke")
            p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=dict(os.environ))
            res = [line[7:] for line in p.stdout.splitlines() if line.startswith("RESULT ")]
            if not res:
                tail = (p.stderr.strip().splitlines() or ["failed"])[-1]
                print(f"{variant or 'default'} packed={packed}: FAILED: {tail[:200]}")
                continue
            r = json.loads(res[0])
            steps = ", ".join(f"{s['loss']}/{s['gnorm']}" + ("!" if s["nonfinite_grads"] else "") for s in r["steps"])
            print(f"{r['variant']:<40} packed={packed!s:<5} loss/gnorm per step: {steps}  ({time.time() - t0:.0f}s)",
                  flush=True)


if __name__ == "__main__":
    from benchmarks.train_step import run_script

    run_script(main)
