"""GDN kernel benchmark: ours (hpt Triton) vs flash-linear-attention vs the torch fallback.

bf16 q/k/v/beta, fp32 g, use_qk_l2norm_in_kernel=True, no initial/final state (training shapes).
For each layer shape and B x T: median ms (triton.testing.do_bench), achieved TFLOP/s and GB/s, the
ratio to a FLOP/byte floor, the GPU's busy time in a call (the union of its kernels' spans, torch.profiler: where
Python issues the kernels slower than the GPU runs them, the median reads the CPU; `--host` says where), and the
max relative error (output and every gradient) to an fp32 reference (the torch chunked path on the same bf16
inputs upcast to fp32).

    python benchmarks/gdn.py [--shapes olmo,qwen] [--bt 2x4096,8x4096,1x32768] [--torch-all] [--profile]
    python benchmarks/gdn.py --resources bf16,fp32   # no GPU: registers / spills / SASS barriers / loop loads (sm_90)
    python benchmarks/gdn.py --sweep '[{"bchunk_stages": 2}]'   # per-kernel ms for each CONFIG override
    python benchmarks/gdn.py --agree '[{"state_bv": 32}]'   # each override's results against the default's
    python benchmarks/gdn.py --host   # host (Python launch) vs GPU busy vs wall ms per call, ours and fla
    python benchmarks/gdn.py --hard   # errors on random and on nearly parallel keys: ours, bwd_split_t, fla
(one --sweep override per process is safer: an illegal address in one config poisons the CUDA context)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from benchmarks.train_step import fail, run_script  # noqa: E402  (user errors: one line, exit 2)
from hybrid_posttrain.kernels.gdn import chunk_gated_delta_rule, torch_chunk_gated_delta_rule  # noqa: E402

SHAPES = {  # name: (H qk heads, HV value heads, K, V)
    "olmo": ("Olmo-Hybrid-7B", 30, 30, 96, 192),
    "qwen": ("Qwen3-Next", 16, 32, 128, 128),
    # not in the table: the wide-key path (key block 256), at fla's GatedDeltaNet layer defaults for hidden
    # size 2048 (head_dim 256, expand_v 2: q/k 0.75 and v 1.5 x hidden)
    "gdn13b": ("GatedDeltaNet-K256", 6, 6, 256, 512),
}
C = 64


def flops(B, T, HV, K, V):
    """Matrix FLOPs of the chunked algorithm (2mnk each), forward and backward, per our kernels."""
    n = B * T * HV  # token-heads
    fwd = n * (6 * K * V + 6 * C * K + 4 * C * V)
    bwd = n * (12 * K * V + 8 * C * V + 14 * C * K + 4 * C * C)
    return fwd, fwd + bwd


def min_bytes(B, T, H, HV, K, V):
    """Each input read once, each output written once (bf16 q,k,v,beta,o,do and grads; fp32 g, dg)."""
    n = B * T
    x_in = n * (2 * H * K * 2 + HV * V * 2 + HV * 4 + HV * 2)  # q, k, v, g, beta
    x_out = n * HV * V * 2  # o
    grads = n * (2 * H * K * 2 + HV * V * 2 + HV * 4 + HV * 2)
    fwd = x_in + x_out
    fb = x_in + x_out + x_in + n * HV * V * 2 + grads  # backward re-reads inputs and do
    return fwd, fb


def make(B, T, H, HV, K, V, seed=0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    q = torch.randn(B, T, H, K, device="cuda", generator=g).bfloat16()
    k = torch.randn(B, T, H, K, device="cuda", generator=g).bfloat16()
    v = torch.randn(B, T, HV, V, device="cuda", generator=g).bfloat16()
    gg = torch.nn.functional.logsigmoid(torch.randn(B, T, HV, device="cuda", generator=g) + 2.0)
    beta = (torch.rand(B, T, HV, device="cuda", generator=g) * 2).bfloat16()
    do = torch.randn(B, T, HV, V, device="cuda", generator=g).bfloat16()
    return [q, k, v, gg, beta], do


def call(fn, xs, grad):
    xs = [x.detach().requires_grad_(grad) for x in xs]
    o, _ = fn(*xs, use_qk_l2norm_in_kernel=True)
    return o, xs


def fwd_out(fn, xs):
    """The output of the forward without gradients (the forward the table times)."""
    with torch.no_grad():
        return fn(*xs, use_qk_l2norm_in_kernel=True)[0]


def fwd_fn(fn, xs):
    return lambda: fwd_out(fn, xs)


def fb_fn(fn, xs, do):
    xr = [x.detach().requires_grad_(True) for x in xs]

    def f():
        o, _ = fn(*xr, use_qk_l2norm_in_kernel=True)
        torch.autograd.grad(o, xr, do)
    return f


OUT_NAMES = ["o", "dq", "dk", "dv", "dg", "dbeta"]  # what outputs() returns, in order


def outputs(fn, xs, do):
    xr = [x.detach().requires_grad_(True) for x in xs]
    o, _ = fn(*xr, use_qk_l2norm_in_kernel=True)
    gr = torch.autograd.grad(o, xr, do)
    return [o.detach()] + [x.detach() for x in gr]


def rel(a, b):
    a, b = a.double(), b.double()
    if not torch.isfinite(a).all():
        return float("inf")
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def peaks():
    """Measured ceilings: bf16 matmul TFLOP/s and device copy GB/s (read + write)."""
    from triton.testing import do_bench

    a = torch.randn(8192, 8192, device="cuda").bfloat16()
    b = torch.randn(8192, 8192, device="cuda").bfloat16()
    ms = do_bench(lambda: a @ b, warmup=50, rep=200, return_mode="median")
    tf = 2 * 8192**3 / ms / 1e9
    x = torch.randn(1 << 28, device="cuda")  # 1 GiB
    y = torch.empty_like(x)
    ms = do_bench(lambda: y.copy_(x), warmup=50, rep=200, return_mode="median")
    gbs = 2 * x.numel() * 4 / ms / 1e6
    return tf, gbs


def load_fla():
    try:
        import fla  # noqa: F401
        import fla.ops.common.chunk_o as co
        from fla.ops.gated_delta_rule import chunk_gated_delta_rule as fla_chunk
    except Exception as e:  # noqa: BLE001
        return None, f"flash-linear-attention not importable ({type(e).__name__}: {e})"
    note = f"fla {getattr(sys.modules['fla'], '__version__', '?')}"
    if getattr(co, "TRITON_ABOVE_3_4_0", False) and not getattr(co, "TRITON_ABOVE_3_7_1", True):
        co.TRITON_ABOVE_3_7_1 = True  # benchmark only: lift fla's Hopper guard for Triton [3.4, 3.7.1)
        note += " (its Hopper guard for Triton>=3.4,<3.7.1 PATCHED OUT in this benchmark; its gradients there are reported wrong by fla #640)"
    return fla_chunk, note


def _profiled(f, iters):
    """torch.profiler's record (CUDA activity) of iters calls of f, after 3 calls to warm up."""
    from torch.profiler import ProfilerActivity, profile

    for _ in range(3):
        f()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(iters):
            f()
        torch.cuda.synchronize()
    return prof


def kernel_times(f, iters=10):
    """ms per call of f in each kernel (summed over its launches)."""
    prof = _profiled(f, iters)
    out = {}
    for e in prof.key_averages():
        t = getattr(e, "device_time_total", None) or getattr(e, "cuda_time_total", 0)
        if t:
            out[e.key[:40]] = t / iters / 1000.0  # ms per call of f
    return out


def covered(spans):
    """Length of the union of (start, end) spans: the time at least one of them runs."""
    total, end = 0.0, float("-inf")
    for a, b in sorted(spans):
        if b > end:
            total += b - max(a, end)
            end = b
    return total


def busy_ms(f, iters=10):
    """GPU busy ms per call of f: the union of its kernels' spans (torch.profiler), so that kernels that run at once
    on two streams (ours at 1x32768: the state pass beside the per-chunk kernels) count once, which a sum of kernel
    times (`kernel_times`) does not."""
    from torch.autograd import DeviceType

    prof = _profiled(f, iters)
    spans = [(e.time_range.start, e.time_range.end) for e in prof.events() if e.device_type == DeviceType.CUDA]
    return covered(spans) / iters / 1000.0


def sweep(configs, shapes, bts, fwd_only=False):
    """Per-kernel device time (ms per fwd+bwd) of ours for each CONFIG override; fwd_only: the no-grad forward's
    only (for settings that change nothing else)."""
    from triton.testing import do_bench

    from hybrid_posttrain.kernels.gdn import chunk as hc

    def by_kernel(fn):  # the kernels over 5 us, slowest first
        kt = kernel_times(fn)
        return ", ".join(f"{k}={v:.3f}" for k, v in sorted(kt.items(), key=lambda x: -x[1]) if v > 0.005)

    base = dict(hc.CONFIG)
    for sname in shapes:
        label, H, HV, K, V = SHAPES[sname]
        for bt in bts:
            B, T = (int(x) for x in bt.split("x"))
            xs, do = make(B, T, H, HV, K, V)
            for i, over in enumerate(configs):
                hc.CONFIG.clear()
                hc.CONFIG.update(base)
                hc.CONFIG.update(over)
                try:
                    # timed before the profiler runs, as in the table: profiling first, the sweep read short steps
                    # (2x4096) 0.2-0.3 ms above the table (session 13: Olmo-Hybrid fwd+bwd 1.795 against 1.630 ms)
                    f = fb_fn(chunk_gated_delta_rule, xs, do)
                    fb = None if fwd_only else do_bench(f, warmup=25, rep=100, return_mode="median")
                    ff = fwd_fn(chunk_gated_delta_rule, xs)
                    fw = do_bench(ff, warmup=25, rep=100, return_mode="median")
                    fbs = "" if fb is None else f", fwd+bwd {fb:.3f} ms :: {by_kernel(f)}"
                    print(f"sweep {label} {bt} cfg{i} {json.dumps(over)}: fwd {fw:.3f} ms{fbs} :: no-grad fwd: "
                          f"{by_kernel(ff)}", flush=True)
                except Exception as e:  # noqa: BLE001
                    print(f"sweep {label} {bt} cfg{i} {json.dumps(over)}: ERROR {type(e).__name__}: {str(e)[:150]}", flush=True)
            del xs, do
    hc.CONFIG.clear()
    hc.CONFIG.update(base)


def _sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def host_ms(f, n=20):
    """Median wall time (ms) of the Python call f() without a sync after it, after a sync: what the CPU spends
    issuing one call's kernels, as long as the GPU's queue does not fill (20 calls of about 10 kernels each)."""
    for _ in range(3):
        f()
    _sync()
    ts = []
    for _ in range(n):
        t = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t)
    _sync()
    return sorted(ts)[n // 2] * 1e3


HOST_PARTS = ("_fwd", "_bwd", "launches", "_run", "_launch", "_empty", "_walk")


def host_parts(f, n=20):
    """Host ms per call of f spent inside each of our driver's functions in HOST_PARTS (inclusive: _fwd holds its
    _run calls), each wrapped with a timer for the measurement, and in all of f ("call")."""
    from hybrid_posttrain.kernels.gdn import chunk as hc

    acc = {}
    orig = {nm: getattr(hc, nm) for nm in HOST_PARTS}

    def timed(nm, fn):
        def w(*a, **kw):
            t = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                acc[nm] = acc.get(nm, 0.0) + time.perf_counter() - t
        return w

    for nm, fn in orig.items():
        setattr(hc, nm, timed(nm, fn))
    try:
        f()
        _sync()
        acc.clear()
        t = time.perf_counter()
        for _ in range(n):
            f()
        acc["call"] = time.perf_counter() - t
        _sync()
    finally:
        for nm, fn in orig.items():
            setattr(hc, nm, fn)
    return {nm: v / n * 1e3 for nm, v in acc.items()}


def triton_launch(f):
    """f with `kernels/_launch.py`'s direct launches off (every kernel through kernel[grid](...)), the setting put
    back after each call."""
    from hybrid_posttrain.kernels import _launch

    def g():
        was = _launch.CONFIG["direct"]
        _launch.CONFIG["direct"] = False
        try:
            return f()
        finally:
            _launch.CONFIG["direct"] = was
    return g


def host(impls, shapes, bts, top=25):
    """Where a call's time goes, for each impl: host (`host_ms`), GPU busy (`busy_ms`) and wall (do_bench, as the
    table), no-grad forward and forward+backward. Where host is near or above GPU busy, the GPU waits on Python and the wall time reads the CPU, which varies from run to run. Then the Python functions
    that take ours the most time (cProfile, 20 forward+backward calls at each shape's first B x T). Ours is timed
    twice: with `kernels/_launch.py`'s direct launches, and with every launch through Triton's kernel[grid](...)."""
    import cProfile
    import io
    import pstats

    from triton.testing import do_bench

    print("| shape | BxT | impl | pass | host ms | GPU busy ms | wall ms |")
    print("|---|---|---|---|---|---|---|")
    for sname in shapes:
        label, H, HV, K, V = SHAPES[sname]
        for ib, bt in enumerate(bts):
            B, T = (int(x) for x in bt.split("x"))
            xs, do = make(B, T, H, HV, K, V)
            for name, fn in impls:
                for pas, f in (("fwd", fwd_fn(fn, xs)), ("fwd+bwd", fb_fn(fn, xs, do))):
                    variants = [(name, f)]
                    if name == "hpt":  # and with every launch through Triton's own path (`kernels/_launch.py`)
                        variants.append(("hpt, Triton's launch", triton_launch(f)))
                    for vname, vf in variants:
                        h = host_ms(vf)
                        d = busy_ms(vf)
                        w = do_bench(vf, warmup=25, rep=100, return_mode="median")
                        print(f"| {label} | {bt} | {vname} | {pas} | {h:.3f} | {d:.3f} | {w:.3f} |", flush=True)
                if name == "hpt":
                    for pas, f in (("fwd", fwd_fn(fn, xs)), ("fwd+bwd", fb_fn(fn, xs, do))):
                        print(f"host parts {label} {bt} {name} {pas} (ms a call): "
                              + ", ".join(f"{k}={v:.3f}" for k, v in host_parts(f).items()), flush=True)
                if name == "hpt" and ib == 0:
                    f = fb_fn(fn, xs, do)
                    f()
                    torch.cuda.synchronize()
                    pr = cProfile.Profile()
                    pr.enable()
                    for _ in range(20):
                        f()
                    pr.disable()
                    torch.cuda.synchronize()
                    buf = io.StringIO()
                    pstats.Stats(pr, stream=buf).sort_stats("tottime").print_stats(top)
                    print(f"cProfile {label} {bt} hpt fwd+bwd x20 (by own time):\n{buf.getvalue()}", flush=True)
            del xs, do
            torch.cuda.empty_cache()


def agree(configs, shapes, bts, fp32=False):
    """For each CONFIG override: its output, every gradient and the no-grad forward's output against the
    default settings' on the same inputs (relative error; a launch setting should give the same results), bf16
    inputs or (fp32) the same upcast. Stops at the first override that raises: a fault poisons the CUDA context
    for those after it."""
    from hybrid_posttrain.kernels.gdn import chunk as hc

    base = dict(hc.CONFIG)
    for sname in shapes:
        label, H, HV, K, V = SHAPES[sname]
        for bt in bts:
            B, T = (int(x) for x in bt.split("x"))
            xs, do = make(B, T, H, HV, K, V)
            if fp32:
                xs, do = [x.float() for x in xs], do.float()
            want = outputs(chunk_gated_delta_rule, xs, do) + [fwd_out(chunk_gated_delta_rule, xs)]
            for over in configs:
                head = f"agree {label} {bt}{' fp32' if fp32 else ''} {json.dumps(over)}"
                hc.CONFIG.clear()
                hc.CONFIG.update(base, **over)
                try:
                    got = outputs(chunk_gated_delta_rule, xs, do) + [fwd_out(chunk_gated_delta_rule, xs)]
                except Exception as e:  # noqa: BLE001
                    print(f"{head}: ERROR {type(e).__name__}: {str(e)[:150]}")
                    return
                finally:
                    hc.CONFIG.clear()
                    hc.CONFIG.update(base)
                errs = {n: rel(a, b) for n, a, b in zip(OUT_NAMES + ["o_fwd"], got, want)}
                worst = max(errs.values())
                print(f"{head}: {'same' if worst == 0 else 'DIFFERS'} max {worst:.1e} :: "
                      + ", ".join(f"{n}={e:.1e}" for n, e in errs.items()), flush=True)


def hard_inputs(T, H, HV, K, V, parallel, device="cuda", seed=7):
    """bf16 inputs of one sequence of T tokens and an output gradient for --hard: `make`'s distribution, or (parallel)
    keys that nearly share one direction per head (that direction plus 5% noise), beta in [1.9, 2] and a slow decay
    (g = -0.01), where (I + A) nears singular inside a chunk (like tests/kernels/test_gdn.py's `_nearly_parallel`):
    repeated or similar tokens, common in trained layers."""
    gen = torch.Generator(device="cpu").manual_seed(seed)

    def r(*s):
        return torch.randn(*s, generator=gen)

    q, k, v = r(1, T, H, K), r(1, T, H, K), r(1, T, HV, V)
    g = torch.nn.functional.logsigmoid(r(1, T, HV) + 2.0)
    beta = torch.rand(1, T, HV, generator=gen) * 2.0
    if parallel:
        k = r(1, 1, H, K) + 0.05 * r(1, T, H, K)
        beta = 1.9 + 0.1 * torch.rand(1, T, HV, generator=gen)
        g = torch.full_like(g, -0.01)
    do = r(1, T, HV, V)
    return [x.to(device) for x in (q.bfloat16(), k.bfloat16(), v.bfloat16(), g, beta.bfloat16())], do.bfloat16().to(device)


def hard(impls, shapes, T=500):
    """Relative errors of the output and every gradient against the fp64 recurrence (the naive kernel, token by
    token, on the same bf16 inputs), random keys and nearly parallel ones (`hard_inputs`): ours, ours with
    bwd_split_t (T and its rounding's remainder in the backward), and the other impls (fla)."""
    from hybrid_posttrain.kernels.gdn import chunk as hc
    from hybrid_posttrain.kernels.gdn import naive_recurrent_gated_delta_rule as naive

    base = dict(hc.CONFIG)
    print(f"| shape | keys (T = {T}, bf16) | impl | max | " + " | ".join(OUT_NAMES) + " |")
    print("|---" * (4 + len(OUT_NAMES)) + "|")
    for sname in shapes:
        label, H, HV, K, V = SHAPES[sname]
        for parallel in (False, True):
            xs, do = hard_inputs(T, H, HV, K, V, parallel)
            ref = outputs(naive, [x.double() for x in xs], do.double())
            rows = [("hpt", chunk_gated_delta_rule, {}), ("hpt bwd_split_t", chunk_gated_delta_rule, {"bwd_split_t": True})]
            rows += [(name, fn, {}) for name, fn in impls if name != "hpt"]
            for name, fn, over in rows:
                hc.CONFIG.update(over)
                try:
                    errs = [rel(a, b) for a, b in zip(outputs(fn, xs, do), ref)]
                    cells = [f"{max(errs):.1e}"] + [f"{e:.1e}" for e in errs]
                except Exception as e:  # noqa: BLE001
                    cells = [f"{type(e).__name__}: {str(e)[:100]}"]
                finally:
                    hc.CONFIG.clear()
                    hc.CONFIG.update(base)
                keys = "nearly parallel" if parallel else "random"
                print(f"| {label} | {keys} | {name} | " + " | ".join(cells) + " |", flush=True)


def _ttgir_walk(ttgir: str):
    """Each line of a compiled kernel's TTGIR with whether it lies inside an `scf.for` body and whether a loop has
    ended before it at the top level (braces counted per line), and the name of the value a `tt.load` on it defines."""
    import re

    depth, loops, after = 0, [], False
    for line in ttgir.splitlines():
        m = re.match(r"\s*%([A-Za-z_][\w]*?)(?:_\d+)?\s*=", line)
        yield line, bool(loops), after, (m[1] if m else line.strip()[:40])
        if re.search(r"\bscf\.for\b", line) and line.rstrip().endswith("{"):
            loops.append(depth)
        depth += line.count("{") - line.count("}")
        while loops and depth <= loops[-1]:
            loops.pop()
            after = after or not loops


def loop_loads(ttgir: str):
    """Loads inside the loops of a compiled kernel's TTGIR: how many the software pipeliner staged ahead
    (`async_copy_global_to_local`) and the names of the tile loads (rank >= 2) it left synchronous
    (`tt.load`): each of those stalls every iteration on memory latency (session 7: `_bwd_wy`'s v, 12% of
    the kernel)."""
    import re

    n_async, sync = 0, []
    for line, in_loop, _, name in _ttgir_walk(ttgir):
        if in_loop and "async_copy_global_to_local" in line:
            n_async += 1
        elif in_loop and "tt.load " in line and re.search(r"tensor<\d+x\d+x", line):
            sync.append(name)
    return n_async, sync


def late_loads(ttgir: str):
    """Names of the tensor loads (`tt.load`, rank >= 1) that a compiled kernel's TTGIR issues outside any loop after
    its first loop has ended: a program waits on each in its epilogue, where the pipeliner stages nothing (session 17:
    `_bwd_wy`'s dk part, which an L2 prefetch at the program's start took off its wait)."""
    import re

    return [name for line, in_loop, after, name in _ttgir_walk(ttgir)
            if after and not in_loop and "tt.load " in line and re.search(r":\s*tensor<\d+x", line)]


def programs_per_sm(regs, warps, shared_bytes):
    """How many programs of one kernel an sm_90 SM holds at once, and what limits it: registers (64K a SM,
    allocated per warp in blocks of 256, i.e. a thread's count rounded up to 8), shared memory (228 KB a SM,
    1 KB of it reserved per program), warps (64) or programs (32). An example of why it matters: fusing the
    output into the forward state pass (session 8) took that pass from two programs per SM to one, and it ran
    1.8x slower."""
    limits = {
        "registers": 65536 // (-(-regs // 8) * 8 * 32 * warps),
        "shared": (228 * 1024) // (shared_bytes + 1024),
        "warps": 64 // warps,
        "programs": 32,
    }
    n = min(limits.values())
    return n, min(limits, key=limits.get)


def sass_counts(sass: str) -> dict:
    """Instructions in a kernel's SASS (`cuobjdump -sass`, predicates and modifiers dropped): the total and the
    ones that say what a program waits on between its matrix products: BAR (barriers: each layout conversion through
    shared memory and each reduction across warps takes one), STS / LDS (shared stores and loads) and HGMMA (the
    wgmma products). Session 19: rewriting `_bwd_dqk`'s L2-norm backward from row sums it forms anyway took 32 fewer
    multiplies a thread but 16 more barriers and 22 more shared stores (conversions between the products' layouts),
    and ran 11-20% slower on the H100; summing `_bwd_wy`'s two key products through A into one took 14 barriers
    and a [64, K] conversion away, and ran 8-10% faster."""
    import collections
    import re

    ops = collections.Counter()
    for line in sass.splitlines():
        m = re.match(r"\s*/\*[0-9a-f]{4,}\*/\s+(?:@!?U?P[T0-9]+\s+)?([A-Z][A-Z0-9_]*)", line)
        if m:
            ops[m[1]] += 1
    return {"instructions": sum(ops.values()), **{k: ops[k] for k in ("BAR", "STS", "LDS", "HGMMA")}}


def resources(shapes, dtypes):
    """Offline, no GPU: compile every kernel for sm_90 (with the 16-byte pointer-alignment hints the JIT
    adds at run time; without them no bf16 tile load is pipelined and the numbers are wrong) and print
    registers, stack (spills) and shared memory from cuobjdump, and the SASS counts of `sass_counts`."""
    import glob
    import inspect
    import re
    import subprocess
    import tempfile

    import triton
    import triton.language as tl
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from hybrid_posttrain.kernels.gdn import chunk as hc

    found = glob.glob(os.path.join(os.path.dirname(triton.__file__), "backends/nvidia/bin/cuobjdump"))
    if not found:
        fail("gdn.py --resources: this Triton has no bundled cuobjdump (backends/nvidia/bin)")
    cuobjdump = found[0]
    f32 = {"g", "gc", "gc_out", "rk", "rk_out", "rq", "rq_out", "rk_in", "rq_in", "h0", "ht", "dht", "dh0", "dkp", "dgp",
           "dg", "dbeta"}
    if not hc.CONFIG["dkp_fp32"]:
        f32.discard("dkp")
    flags = {"_fwd_state": dict(HAS_H0=False, STORE_HT=False), "_bwd_state": dict(HAS_DHT=False, STORE_DH0=False),
             "_fwd_prep": dict(STORE_AI=True), "_fwd_prep64": dict(STORE_AI=True)}
    for cdt in dtypes:
        for sname in shapes:
            label, H, HV, K, V = SHAPES[sname]
            DT = {"bf16": tl.bfloat16, "fp32": tl.float32}[cdt]
            base = dict(H=H, HV=HV, K=K, V=V, BK=hc._cfg(K, V)[0], L2=True, DT=DT)
            # the launch settings the driver uses (the forward state pass at a grid that fills the GPU)
            for name, (bv, warps, stages, nreg) in hc.launches(K, V, cdt == "fp32").items():
                fn, consts = getattr(hc, name), dict(base, BV=bv, **flags.get(name, {}))
                if name == "_bwd_state":  # the kernel the driver runs at a grid that exceeds the SMs
                    fn, extra = hc.bstate_kernel(K)
                    consts.update(extra)
                if name in ("_bwd_dqk", "_bwd_wy"):
                    consts["GA"] = HV > H and bool(hc.CONFIG["group_atomic"])
                if name == "_bwd_wy":
                    consts["TW"] = hc.prep64_flags(True, cdt == "fp32")["TW"]
                if name in ("_fwd_state", "_fwd_out"):  # as the driver launches them where no backward follows
                    consts["HS"] = hc.out_chunks(cdt == "fp32", base["BK"])
                if name == "_fwd_out":
                    consts["S"] = consts["HS"]
                if name == "_bwd_dqk":  # its CONFIG-set constexprs as the driver launches it
                    consts.update(hc.bchunk_flags())
                if name == "_bwd_wy":  # its CONFIG-set constexprs as the driver launches it on an NVIDIA GPU
                    consts.update(hc.wy_flags(True, cdt == "fp32"))
                if name == "_fwd_prep64":  # as the driver launches it with L2-normalised keys
                    consts.update(hc.prep64_flags(True, cdt == "fp32"))
                for a, prm in inspect.signature(fn.fn).parameters.items():  # constexprs left at their defaults
                    if a not in consts and prm.default is not inspect.Parameter.empty:
                        consts[a] = prm.default
                sig = {}
                for a in fn.arg_names:
                    if a in consts:
                        sig[a] = "constexpr"
                    elif a in ("scale",):
                        sig[a] = "fp32"
                    elif a == "TT":
                        sig[a] = "i32"
                    elif a in ("cinfo", "ginfo", "cu", "coff"):
                        sig[a] = "*i32"
                    elif a in f32:
                        sig[a] = "*fp32"
                    else:
                        sig[a] = "*" + cdt
                opts = {"num_warps": warps, "num_stages": stages, **({"maxnreg": nreg} if nreg else {})}
                attrs = {(i,): [["tt.divisibility", 16]] for i, a in enumerate(fn.arg_names) if sig[a].startswith("*")}
                ck = triton.compile(ASTSource(fn=fn, signature=sig, constexprs=consts, attrs=attrs),
                                    target=GPUTarget("cuda", 90, 32), options=opts)
                with tempfile.NamedTemporaryFile(suffix=".cubin") as fh:
                    fh.write(ck.asm["cubin"])
                    fh.flush()
                    out = subprocess.run([cuobjdump, "--dump-resource-usage", fh.name], capture_output=True, text=True).stdout
                    sass = sass_counts(subprocess.run([cuobjdump, "-sass", fh.name], capture_output=True, text=True).stdout)
                m = re.search(r"REG:(\d+) STACK:(\d+)", out)
                n_async, sync = loop_loads(ck.asm["ttgir"])
                per_sm, by = programs_per_sm(int(m[1]), warps, ck.metadata.shared)
                print(f"{cdt:5s} {label:15s} {fn.__name__:12s} {warps} warps, {stages} stages, BV {consts['BV']}: "
                      f"{m[1]} registers, {m[2]} B stack, {ck.metadata.shared / 1024:.0f} KB shared, {per_sm} per SM "
                      f"(by {by}); SASS {sass['instructions']} instructions, " + ", ".join(
                          f"{sass[k]} {k}" for k in ("BAR", "STS", "LDS", "HGMMA")) + "; "
                      f"loop loads {n_async} staged, {len(sync)} synchronous"
                      f"{' (' + ', '.join(sync) + ')' if sync else ''}; "
                      f"late loads: {', '.join(late_loads(ck.asm['ttgir'])) or 'none'}; "
                      f"{ck.asm['ptx'].count('prefetch.global.L2')} L2 prefetch instructions", flush=True)


def check_shapes(prog, shapes, bts):
    """Each of shapes a known head shape (SHAPES) and each of bts a BxT of positive integers, else one line and exit 2
    naming prog (gdn.py, gdn_ncu.py)."""
    for sname in shapes:
        if sname not in SHAPES:
            fail(f"{prog}: unknown shape {sname!r} (known: {', '.join(SHAPES)})")
    for bt in bts:
        parts = bt.split("x")
        if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
            fail(f"{prog}: --bt {bt!r}: expected BxT, e.g. 8x4096")


def check(args):
    """Bad input: one line and exit 2 before anything runs. --sweep is replaced by its parsed list."""
    check_shapes("gdn.py", args.shapes.split(","), args.bt.split(","))
    if args.hard and (args.sweep or args.agree or args.host or args.resources or args.profile or args.json):
        fail("gdn.py: --hard runs on its own (not with --sweep, --agree, --host, --resources, --profile or --json)")
    if args.resources:
        bad = [d for d in args.resources.split(",") if d not in ("bf16", "fp32")]
        if bad:
            fail(f"gdn.py --resources: unknown dtype {bad[0]!r} (bf16, fp32)")
        if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
            fail("gdn.py --resources compiles for sm_90, which the Triton interpreter cannot: unset TRITON_INTERPRET")
        return
    if args.base and not os.path.isfile(args.base):
        fail(f"gdn.py: --base {args.base}: no such file")
    if args.fp32 and not args.agree:
        fail("gdn.py: --fp32 applies to --agree only")
    if args.host and (args.sweep or args.agree or args.resources or args.profile or args.json):
        fail("gdn.py: --host runs on its own (not with --sweep, --agree, --resources, --profile or --json)")
    if args.fwd_only and not args.sweep:
        fail("gdn.py: --fwd-only applies to --sweep only")
    for opt in ("sweep", "agree"):
        if getattr(args, opt):
            from hybrid_posttrain.kernels._env import KernelEnvError, override_list
            from hybrid_posttrain.kernels.gdn.chunk import CONFIG

            try:  # an unknown key would otherwise run (and be reported as) the default settings
                setattr(args, opt, override_list(f"gdn.py: --{opt}", getattr(args, opt), CONFIG))
            except KernelEnvError as e:
                fail(str(e))
    if not torch.cuda.is_available():
        fail("gdn.py needs a CUDA GPU (--resources works without one)")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", default="olmo,qwen")
    ap.add_argument("--bt", default="2x4096,8x4096,1x32768")
    ap.add_argument("--torch-all", action="store_true", help="time the torch fallback at every B x T")
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--no-fla", action="store_true")
    ap.add_argument("--no-ref", action="store_true", help="skip the fp32 reference / error column")
    ap.add_argument("--profile", action="store_true", help="per-kernel times (torch.profiler) for ours")
    ap.add_argument("--json", default=None)
    ap.add_argument("--sweep", default=None,
                    help="JSON list of hpt CONFIG overrides: per-kernel times for each (instead of the table)")
    ap.add_argument("--fwd-only", action="store_true", help="--sweep: time the no-grad forward only")
    ap.add_argument("--agree", default=None,
                    help="JSON list of hpt CONFIG overrides: each one's results against the default settings'")
    ap.add_argument("--fp32", action="store_true", help="--agree on fp32 inputs (the exact-product path)")
    ap.add_argument("--hard", action="store_true",
                    help="relative errors on random and on nearly parallel keys (bf16, T = 500) against the fp64 "
                         "recurrence: ours, ours with bwd_split_t, fla")
    ap.add_argument("--host", action="store_true",
                    help="host (Python) vs GPU busy vs wall ms per call, ours, base and fla, and ours' cProfile")
    ap.add_argument("--base", default=None, help="another chunk.py (e.g. the previous version) timed as impl 'base'")
    ap.add_argument("--resources", default=None, metavar="DTYPES",
                    help="no GPU: compile for sm_90 and print registers/spills/shared memory/SASS counts (e.g. bf16,fp32)")
    args = ap.parse_args()
    check(args)
    if args.resources:
        resources(args.shapes.split(","), args.resources.split(","))
        return
    if args.agree:
        agree(args.agree, args.shapes.split(","), args.bt.split(","), args.fp32)
        return
    import triton
    from triton.testing import do_bench

    dev = torch.cuda.get_device_name()
    print(f"device: {dev}; torch {torch.__version__}; triton {triton.__version__}; python {platform.python_version()}")
    fla_chunk, fla_note = load_fla()
    print(f"flash-linear-attention: {fla_note}")
    from hybrid_posttrain.kernels.gdn import chunk as hc

    print(f"hpt config: {hc.CONFIG}")
    tf_peak, bw_peak = peaks()
    print(f"measured ceilings: bf16 matmul {tf_peak:.0f} TFLOP/s, device copy {bw_peak:.0f} GB/s")

    if args.sweep:  # per-kernel times for each override only: no table (it would time fla and torch first)
        sweep(args.sweep, args.shapes.split(","), args.bt.split(","), args.fwd_only)
        return
    impls = [("hpt", chunk_gated_delta_rule)]
    if args.base:
        from benchmarks.probe_step import swap

        swap("gdn_base_chunk", args.base)
        impls.append(("base", sys.modules["gdn_base_chunk"].chunk_gated_delta_rule))
    if fla_chunk is not None and not args.no_fla:
        impls.append(("fla", fla_chunk))
    if args.host:
        host(impls, args.shapes.split(","), args.bt.split(","))
        return
    if args.hard:
        hard(impls, args.shapes.split(","))
        return
    if not args.no_torch:
        impls.append(("torch", torch_chunk_gated_delta_rule))
    rows, records = [], []
    for sname in args.shapes.split(","):
        label, H, HV, K, V = SHAPES[sname]
        for bt in args.bt.split(","):
            B, T = (int(x) for x in bt.split("x"))
            xs, do = make(B, T, H, HV, K, V)
            f_fwd, f_fb = flops(B, T, HV, K, V)
            b_fwd, b_fb = min_bytes(B, T, H, HV, K, V)
            floor_fwd = max(f_fwd / tf_peak / 1e9, b_fwd / bw_peak / 1e6)
            floor_fb = max(f_fb / tf_peak / 1e9, b_fb / bw_peak / 1e6)
            ref = None
            t_row = time.time()
            if not args.no_ref:
                ref = outputs(torch_chunk_gated_delta_rule, [x.float() if x.dtype != torch.float32 else x for x in xs], do.float())
            res = {}
            for name, fn in impls:
                if name == "torch" and not args.torch_all and bt != "2x4096":
                    continue
                r = {"impl": name}
                try:
                    r["fwd"] = do_bench(fwd_fn(fn, xs), warmup=25, rep=100, return_mode="median")
                    r["fb"] = do_bench(fb_fn(fn, xs, do), warmup=25, rep=100, return_mode="median")
                    # the same calls' GPU busy time (`busy_ms`): where Python issues the kernels slower than the
                    # GPU runs them (2x4096, fla and partly ours; `--host`), the wall time reads the CPU
                    r["fwd_dev"] = busy_ms(fwd_fn(fn, xs))
                    r["fb_dev"] = busy_ms(fb_fn(fn, xs, do))
                    if ref is not None:
                        got = outputs(fn, xs, do)
                        errs = {n: rel(a, b) for n, a, b in zip(OUT_NAMES, got, ref)}
                        # the timed forward: without a backward, it may take another path
                        errs["o_fwd"] = rel(fwd_out(fn, xs), ref[0])
                        r["errs"] = errs
                        r["err"] = max(errs.values())
                except Exception as e:  # noqa: BLE001
                    r["error"] = f"{type(e).__name__}: {str(e)[:200]}"
                print(f"  [{time.time() - t_row:.0f}s] {label} {bt} {name} done", flush=True)
                res[name] = r
                torch.cuda.empty_cache()
            for name, r in res.items():
                rec = dict(shape=label, B=B, T=T, **r, floor_fwd=floor_fwd, floor_fb=floor_fb)
                records.append(rec)
                if "error" in r:
                    rows.append([label, bt, name, r["error"]])
                    print("  row: | " + " | ".join(rows[-1]) + " |", flush=True)
                    continue
                ratio = ""
                if name == "hpt" and "fla" in res and "fwd" in res["fla"]:
                    fl = res["fla"]
                    ratio = (f"{fl['fwd'] / r['fwd']:.2f}x / {fl['fb'] / r['fb']:.2f}x (GPU busy "
                             f"{fl['fwd_dev'] / r['fwd_dev']:.2f}x / {fl['fb_dev'] / r['fb_dev']:.2f}x)")
                if name == "hpt" and "fwd" in res.get("base", {}):
                    ratio += f" (base/ours {res['base']['fwd'] / r['fwd']:.2f}x / {res['base']['fb'] / r['fb']:.2f}x)"
                rows.append([
                    label, bt, name,
                    f"{r['fwd']:.3f}", f"{f_fwd / r['fwd'] / 1e9:.0f}", f"{b_fwd / r['fwd'] / 1e6:.0f}",
                    f"{r['fwd'] / floor_fwd:.1f}",
                    f"{r['fb']:.3f}", f"{f_fb / r['fb'] / 1e9:.0f}", f"{b_fb / r['fb'] / 1e6:.0f}",
                    f"{r['fb'] / floor_fb:.1f}", f"{r['fwd_dev']:.3f} / {r['fb_dev']:.3f}",
                    f"{r['err']:.1e}" if "err" in r else "-", ratio,
                ])
                if "errs" in r:
                    print(f"  {label} {bt} {name} rel errors: " + ", ".join(f"{n}={e:.2e}" for n, e in r["errs"].items()))
                print("  row: | " + " | ".join(rows[-1]) + " |", flush=True)
            del xs, do, ref
            torch.cuda.empty_cache()
            sys.stdout.flush()

    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        label, H, HV, K, V = SHAPES["olmo"]
        xs, do = make(2, 4096, H, HV, K, V)
        f = fb_fn(chunk_gated_delta_rule, xs, do)
        for _ in range(3):
            f()
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(10):
                f()
            torch.cuda.synchronize()
        print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=15))

    hdr = ["shape", "BxT", "impl", "fwd ms", "TFLOP/s", "GB/s", "x floor", "fwd+bwd ms", "TFLOP/s", "GB/s",
           "x floor", "GPU busy ms fwd / fwd+bwd", "max rel err", "fla/ours fwd / fwd+bwd"]
    print()
    print(f"device: {dev}; torch {torch.__version__}; triton {triton.__version__}; {fla_note}")
    print("| " + " | ".join(hdr) + " |")
    print("|" + "---|" * len(hdr))
    for r in rows:
        print("| " + " | ".join(r) + " |")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(records, fh, indent=1)


if __name__ == "__main__":
    t0 = time.time()
    run_script(lambda: main() or print(f"(total {time.time() - t0:.0f} s)"))
