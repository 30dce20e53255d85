"""Probe: how much would overlapping the serial state pass with the per-chunk kernels save?
Records the launches of one fwd+bwd, then replays: each kernel alone, producer then consumer in
sequence, and producer || consumer on two streams (same buffers: timing only)."""
import json, os, sys
import torch
sys.path.insert(0, os.getcwd())
from hybrid_posttrain.kernels.gdn import chunk as C
from benchmarks.gdn import SHAPES, make
from hybrid_posttrain.kernels.gdn import chunk_gated_delta_rule

calls = []
class Rec:
    def __init__(self, fn): self.fn = fn
    def __getitem__(self, grid):
        def launch(*a, **kw):
            calls.append((self.fn.__name__, grid, a, kw))
            return self.fn[grid](*a, **kw)
        return launch
    def __getattr__(self, n): return getattr(self.fn, n)

for n in ["_fwd_prep", "_fwd_prep64", "_fwd_state", "_fwd_out", "_bwd_dlocal", "_bwd_state", "_bwd_state_ks", "_bwd_dqk", "_bwd_wy"]:
    setattr(C, n, Rec(getattr(C, n)))

def bench(f, n=20):
    for _ in range(3): f()
    torch.cuda.synchronize()
    ts = []
    for _ in range(n):
        a = torch.cuda.Event(enable_timing=True); b = torch.cuda.Event(enable_timing=True)
        a.record(); f(); b.record(); torch.cuda.synchronize(); ts.append(a.elapsed_time(b))
    ts.sort(); return ts[len(ts) // 2]

s1, s2 = torch.cuda.Stream(), torch.cuda.Stream()
def par(A, B):
    def f():
        cur = torch.cuda.current_stream()
        s1.wait_stream(cur); s2.wait_stream(cur)
        with torch.cuda.stream(s1):
            for x in A: x()
        with torch.cuda.stream(s2):
            for x in B: x()
        cur.wait_stream(s1); cur.wait_stream(s2)
    return f
def seq(*fs):
    def f():
        for x in fs: x()
    return f

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
        L = {}
        for name, grid, a, kw in calls:
            L[name] = (lambda fn=getattr(C, name).fn, grid=grid, a=a, kw=kw: fn[grid](*a, **kw))
        names = [c[0] for c in calls]
        t = {n: bench(L[n]) for n in names}
        st = "_fwd_state"; bs = "_bwd_state_ks" if "_bwd_state_ks" in L else "_bwd_state"
        grids = {c[0]: c[1] for c in calls}
        r = {"shape": shp, "bt": bt, "grids": {k: list(v) for k, v in grids.items()}, "alone": t}
        r["fwd seq state+out"] = bench(seq(L[st], L["_fwd_out"]))
        r["fwd par state||out"] = bench(par([L[st]], [L["_fwd_out"]]))
        r["bwd seq bstate+dqk+wy"] = bench(seq(L[bs], L["_bwd_dqk"], L["_bwd_wy"]))
        r["bwd par bstate||(dqk,wy)"] = bench(par([L[bs]], [L["_bwd_dqk"], L["_bwd_wy"]]))
        r["bwd par bstate||dqk"] = bench(par([L[bs]], [L["_bwd_dqk"]]))
        r["bwd seq bstate+dqk"] = bench(seq(L[bs], L["_bwd_dqk"]))
        if "_bwd_dlocal" in L:
            r["bwd par dlocal||bstate"] = bench(par([L["_bwd_dlocal"]], [L[bs]]))
        print(json.dumps(r), flush=True)
