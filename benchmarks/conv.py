"""Short causal conv (+SiLU) of a GDN layer, forward and forward+backward: our fused kernel against PyTorch.

    python benchmarks/conv.py                      # Olmo-Hybrid 1.33B student layer: 4 x 4096 tokens, 6144 channels
    python benchmarks/conv.py --configs '[{"bt":16,"bc":64,"warps":4},{"bt":8,"bc":64,"warps":4}]'

Rows: ``torch`` (models/hybrid.py's boundary-aware conv: F.conv1d without boundaries, one masked pass per tap
with them; SiLU; what the fast path replaces), ``hpt`` per tile config (each in its own process, since the
config is read at import). Input as the GDN fast path feeds it: the q/k/v columns of a wider projection
output, q/k/v out as three tensors. ms are medians (triton.testing.do_bench); GB/s counts x and y (forward) and
x, dy and dx (backward) once; max error against the fp32 reference.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.train_step import fail, run_script  # noqa: E402  (user errors: one line, exit 2)


def timeit(fn) -> float:
    from triton.testing import do_bench  # as benchmarks/gdn.py times its kernels

    return do_bench(fn, warmup=25, rep=100, return_mode="median")


def one(impl: str, B: int, T: int, splits: list[int], docs: int, extra: int = 32) -> dict:
    from hybrid_posttrain.kernels.conv import causal_conv1d_btc, causal_conv1d_ref, seq_idx_from_cu_seqlens
    from hybrid_posttrain.models.hybrid import boundary_causal_conv1d

    C = sum(splits)
    g = torch.Generator(device="cuda").manual_seed(0)
    proj = torch.randn(B, T, C + extra, device="cuda", generator=g, dtype=torch.bfloat16).requires_grad_()
    w = (torch.randn(C, 4, device="cuda", generator=g) * 0.5).bfloat16().requires_grad_()
    seq_idx = None
    if docs > 1:
        cu = torch.linspace(0, T, docs + 1, device="cuda").long()
        seq_idx = seq_idx_from_cu_seqlens(cu, T)[None].expand(B, T)
    dys = [torch.randn(B, T, n, device="cuda", generator=g, dtype=torch.bfloat16) for n in splits]

    def fwd():
        x = proj[..., :C]
        if impl == "torch":
            outs = []
            for b in range(B):  # the torch path takes one [T] document index per row
                y = boundary_causal_conv1d(x[b:b + 1].transpose(1, 2), w, None, "silu",
                                           seq_idx[b] if seq_idx is not None else None)
                outs.append(y.transpose(1, 2))
            return torch.split(torch.cat(outs), splits, dim=-1)
        return causal_conv1d_btc(x, w, None, "silu", seq_idx, splits=tuple(splits))

    def fwd_bwd():
        outs = fwd()
        torch.autograd.backward(outs, dys)

    with torch.no_grad():
        ms_f = timeit(fwd)
    proj.grad = w.grad = None
    ms_fb = timeit(fwd_bwd)
    proj.grad = w.grad = None
    outs = fwd()
    torch.autograd.backward(outs, dys)
    ref = causal_conv1d_ref(proj.detach().float()[..., :C].transpose(1, 2), w.detach().float(), None, "silu",
                            seq_idx).transpose(1, 2)
    err = max((o.float() - r).abs().max().item() for o, r in zip(outs, torch.split(ref, splits, dim=-1), strict=True))
    nbytes = B * T * C * 2
    return {"impl": impl, "config": os.environ.get("HPT_CONV_CONFIG", ""), "docs": docs, "fwd_ms": ms_f,
            "fwd_gbs": 2 * nbytes / ms_f / 1e6, "fwdbwd_ms": ms_fb, "bwd_gbs": 3 * nbytes / max(ms_fb - ms_f, 1e-6) / 1e6,
            "max_err": err}


def check(args) -> tuple[list[int], list[int], list[dict]]:
    """Bad input: one line and exit 2 before anything runs. The q/k/v splits, documents per row and the
    tile configs."""
    from hybrid_posttrain.kernels._env import KernelEnvError, override_list
    from hybrid_posttrain.kernels.conv import CONFIG

    splits, docs = ([int(x) if x.strip().isdigit() else 0 for x in a.split(",")] for a in (args.splits, args.docs))
    if min(splits + docs) <= 0:
        fail(f"conv.py: --splits {args.splits!r} / --docs {args.docs!r}: expected comma-separated positive integers")
    try:
        configs = override_list("conv.py: --configs", args.configs, CONFIG)
    except KernelEnvError as e:
        fail(str(e))
    return splits, docs, configs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=4096)
    ap.add_argument("--splits", default="1536,1536,3072", help="q,k,v channels (1.33B student: 16 heads x 96/96/192)")
    ap.add_argument("--docs", default="1,2", help="documents per row (1: no boundaries)")
    ap.add_argument("--configs", default='[{"bt":16,"bc":64,"warps":8},{"bt":16,"bc":64,"warps":4},{"bt":8,"bc":64,"warps":4},'
                                         '{"bt":16,"bc":32,"warps":4},{"bt":16,"bc":128,"warps":8}]')
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    splits, docs_per_row, configs = check(args)
    if args.one:
        impl, docs = args.one.split(":")
        print(json.dumps(one(impl, args.batch, args.seq, splits, int(docs))))
        return
    if not torch.cuda.is_available():
        fail("benchmarks/conv.py needs a CUDA GPU")
    rows = []
    runs = [("torch", None)] + [("hpt", c) for c in configs]
    for impl, cfg in runs:
        for docs in docs_per_row:
            env = dict(os.environ)
            if cfg:
                env["HPT_CONV_CONFIG"] = json.dumps(cfg)
            p = subprocess.run([sys.executable, __file__, "--one", f"{impl}:{docs}", "--batch", str(args.batch),
                                "--seq", str(args.seq), "--splits", args.splits], env=env, capture_output=True, text=True)
            if p.returncode != 0:
                rows.append({"impl": impl, "config": json.dumps(cfg) if cfg else "", "docs": docs,
                             "error": p.stderr.strip().splitlines()[-1][:80] if p.stderr.strip() else "failed"})
            else:
                rows.append(json.loads(p.stdout.strip().splitlines()[-1]))
    print(f"## conv + SiLU, {args.batch} x {args.seq} tokens, channels {args.splits} ({torch.cuda.get_device_name()})")
    print("| impl | config | docs/row | fwd ms | fwd GB/s | fwd+bwd ms | bwd GB/s | max err |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['impl']} | {r['config']} | {r['docs']} | {r['error']} | | | | |")
        else:
            print(f"| {r['impl']} | {r['config']} | {r['docs']} | {r['fwd_ms']:.3f} | {r['fwd_gbs']:.0f} | "
                  f"{r['fwdbwd_ms']:.3f} | {r['bwd_gbs']:.0f} | {r['max_err']:.1e} |")


if __name__ == "__main__":
    run_script(main)
