"""Largest error to the fp64 recurrence of the bf16 path with bwd_split_t off / on (session 15, call 3).

Random and nearly-parallel-keys inputs (beta near 2; decay -0.01, and -0.001 for "slowdecay"), both head shapes,
T = 500. Run on the GPU from the repository root:

    PYTHONPATH=$PWD python3 benchmarks/results/session15/bwd_split_probe.py
"""
import sys

import torch

sys.path.insert(0, "tests/kernels")
from test_gdn import _nearly_parallel, make_inputs, reference, rel, run  # noqa: E402

from hybrid_posttrain.kernels.gdn import chunk  # noqa: E402

for H, HV, K, V in [(2, 2, 96, 192), (2, 4, 128, 128)]:
    T = 500
    for case in ("random", "parallel", "parallel-slowdecay"):
        xs = make_inputs(1, T, H, HV, K, V, torch.float32, seed=7)
        if case.startswith("parallel"):
            xs = _nearly_parallel(xs, T, H, HV, K)
            if case == "parallel-slowdecay":
                xs[3] = torch.full_like(xs[3], -0.001)
        xb = [x.to(torch.bfloat16) if i in (0, 1, 2, 4) else x for i, x in enumerate(xs)]
        ref = reference(xb)
        for split in (False, True):
            chunk.CONFIG["bwd_split_t"] = split
            got = run(chunk.chunk_gated_delta_rule, xb)
            e = {n: rel(got[n], ref[n]) for n in ref if ref[n] is not None}
            print((H, HV, K, V), case, "split" if split else "one-bf16", f"max {max(e.values()):.2e}",
                  {n: f"{v:.1e}" for n, v in e.items()}, flush=True)
