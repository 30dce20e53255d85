"""Probe (session 10, call 1): how much could overlapping the serial state passes with the per-chunk kernels
save? Records the launches of one fwd+bwd of ours, then replays them: each kernel alone, producer then
consumers in sequence, and producer || consumers on two CUDA streams over the same buffers. The parallel
replay honours no dependency (its results are garbage), so it is an upper bound on what a producer /
consumer kernel could gain, not a result.

    python benchmarks/results/session10/overlap_probe.py olmo,qwen 1x32768,8x4096   # prints one JSON line each
"""

import json
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", ".."))

from benchmarks.gdn import SHAPES, make  # noqa: E402
from hybrid_posttrain.kernels.gdn import chunk as C  # noqa: E402
from hybrid_posttrain.kernels.gdn import chunk_gated_delta_rule  # noqa: E402

KERNELS = ["_fwd_prep", "_fwd_prep64", "_fwd_state", "_fwd_out", "_bwd_dlocal", "_bwd_state", "_bwd_state_ks",
           "_bwd_dqk", "_bwd_wy"]
calls = []


class Recorder:
    """Stands in for a Triton kernel in the chunk module: launches it and records (name, grid, args)."""

    def __init__(self, fn):
        self.fn = fn

    def __getitem__(self, grid):
        def launch(*args, **kw):
            calls.append((self.fn.__name__, grid, args, kw))
            return self.fn[grid](*args, **kw)

        return launch

    def __getattr__(self, name):
        return getattr(self.fn, name)


def bench(f, n=20):
    """Median ms of f over n runs (CUDA events), after 3 warm-up runs."""
    for _ in range(3):
        f()
    torch.cuda.synchronize()
    ts = []
    for _ in range(n):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        f()
        b.record()
        torch.cuda.synchronize()
        ts.append(a.elapsed_time(b))
    return sorted(ts)[n // 2]


def seq(*fs):
    def f():
        for x in fs:
            x()

    return f


def par(first, second, s1, s2):
    """The launches in `first` on stream s1 and those in `second` on s2, both after the current stream."""

    def f():
        cur = torch.cuda.current_stream()
        s1.wait_stream(cur)
        s2.wait_stream(cur)
        with torch.cuda.stream(s1):
            seq(*first)()
        with torch.cuda.stream(s2):
            seq(*second)()
        cur.wait_stream(s1)
        cur.wait_stream(s2)

    return f


def main():
    for name in KERNELS:
        setattr(C, name, Recorder(getattr(C, name)))
    s1, s2 = torch.cuda.Stream(), torch.cuda.Stream()
    for shp in sys.argv[1].split(","):
        _, H, HV, K, V = SHAPES[shp]
        for bt in sys.argv[2].split(","):
            B, T = map(int, bt.split("x"))
            xs, do = make(B, T, H, HV, K, V)
            xs = [x.requires_grad_() for x in xs]
            calls.clear()
            o, _ = chunk_gated_delta_rule(*xs, use_qk_l2norm_in_kernel=True)
            o.backward(do)
            torch.cuda.synchronize()
            L = {name: (lambda fn=getattr(C, name).fn, grid=grid, a=a, kw=kw: fn[grid](*a, **kw))
                 for name, grid, a, kw in calls}
            bs = "_bwd_state_ks" if "_bwd_state_ks" in L else "_bwd_state"
            r = {"shape": shp, "bt": bt, "grids": {c[0]: list(c[1]) for c in calls},
                 "alone": {name: bench(L[name]) for name in L}}
            r["fwd seq state+out"] = bench(seq(L["_fwd_state"], L["_fwd_out"]))
            r["fwd par state||out"] = bench(par([L["_fwd_state"]], [L["_fwd_out"]], s1, s2))
            r["bwd seq bstate+dqk+wy"] = bench(seq(L[bs], L["_bwd_dqk"], L["_bwd_wy"]))
            r["bwd par bstate||(dqk,wy)"] = bench(par([L[bs]], [L["_bwd_dqk"], L["_bwd_wy"]], s1, s2))
            r["bwd par bstate||dqk"] = bench(par([L[bs]], [L["_bwd_dqk"]], s1, s2))
            r["bwd seq bstate+dqk"] = bench(seq(L[bs], L["_bwd_dqk"]))
            if "_bwd_dlocal" in L:
                r["bwd par dlocal||bstate"] = bench(par([L["_bwd_dlocal"]], [L[bs]], s1, s2))
            print(json.dumps(r), flush=True)


if __name__ == "__main__":
    main()
