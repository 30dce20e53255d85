"""Largest error to the fp64 recurrence of the bf16 path with bwd_split_t off / on (session 15, call 3).

Random and nearly-parallel-keys inputs (beta near 2; decay -0.01, and -0.001 for "slowdecay"), both head shapes,
T = 500. Run on the GPU from the repository root:

    PYTHONPATH=$PWD python3 benchmarks/results/session15/bwd_split_probe.py
"""
import sys

import torch

sys.path.insert(0, "tests/kernels")
from test_gdn import make_inputs, reference, rel, run  # noqa: E402

from hybrid_posttrain.kernels.gdn import chunk  # noqa: E402

for H, HV, K, V in [(2, 2, 96, 192), (2, 4, 128, 128)]:
    T = 500
    for case in ("random", "parallel", "parallel-slowdecay"):
        xs = make_inputs(1, T, H, HV, K, V, torch.float32, seed=7)
        if case.startswith("parallel"):
            gen = torch.Generator(device="cpu").manual_seed(8)
            base = torch.randn(1, 1, H, K, generator=gen)
            xs[1] = (base + 0.05 * torch.randn(1, T, H, K, generator=gen)).to(xs[1])
            xs[4] = (1.9 + 0.1 * torch.rand(1, T, HV, generator=gen)).to(xs[4])
            xs[3] = torch.full_like(xs[3], -0.01 if case == "parallel" else -0.001)
        xb = [x.to(torch.bfloat16) if i in (0, 1, 2, 4) else x for i, x in enumerate(xs)]
        ref = reference(xb)
        for split in (False, True):
            chunk.CONFIG["bwd_split_t"] = split
            got = run(chunk.chunk_gated_delta_rule, xb)
            e = {n: rel(got[n], ref[n]) for n in ref if ref[n] is not None}
            print((H, HV, K, V), case, "split" if split else "one-bf16", f"max {max(e.values()):.2e}",
                  {n: f"{v:.1e}" for n, v in e.items()}, flush=True)
