"""The backward's Gluon `_bwd_dqk` (`hybrid_posttrain/kernels/gdn/dqk_gluon.py`) against the Triton kernel: one
forward and backward of `chunk` at a head shape with `_bwd_dqk`'s launch arguments recorded, then both kernels on
those arguments (the Gluon one's dk / d(gc) parts poisoned with NaN first), their dq / dk-part / d(gc)-part compared
(relative), and two do_bench medians of each. `--warps` items are W[:R[:S]]: warps, a register cap (0: none) and
the (h, dh, delta, do) slots; none given: the kernel's own rules. `--offline` compiles for sm_90 without a GPU and
prints registers, stack and shared memory.

    python3 benchmarks/gluon_dqk.py [--shapes qwen,olmo] [--bt 8x4096] [--warps 4,8:128,4:0:1]   # a Hopper GPU
    python3 benchmarks/gluon_dqk.py --offline [--shapes qwen,olmo] [--warps ...]                  # no GPU
"""

from __future__ import annotations

import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import gdn  # noqa: E402
from benchmarks.gluon_out import SHAPES, cli, cpu_buffers, sm90_resources  # noqa: E402
from benchmarks.train_step import run_script  # noqa: E402
from hybrid_posttrain.kernels.gdn import dqk_gluon as dg  # noqa: E402


def with_slots(w, K):
    """(warps, register cap, slots) of one --warps item W[:R[:S]] (R 0: no cap), the kernel's own rules where it is
    (None,)."""
    if w[0] is None:
        return dg.warps(K) + (dg.slots(K),)
    return w[0], (w[1] or None) if len(w) > 1 else None, w[2] if len(w) > 2 else dg.slots(K)


def offline(shapes, warps):
    """Compile `_dqk_gl` for sm_90 (no GPU) and print registers, stack and shared memory."""
    for sname in shapes:
        label, H, HV, K, V = SHAPES[sname]
        q, k, hbuf, vnew = cpu_buffers(H, HV, K, V, rows=64)
        for w in warps:
            nw, cap, ns = with_slots(w, K)
            descs, consts = dg.args(q, k, hbuf, hbuf, vnew, vnew, nslot=ns)
            regs, stack, kb = sm90_resources(dg._dqk_gl, descs, dict(consts, GA=HV > H),
                                             {"gc", "rq_in", "rk_in", "dgp"}, nw, cap)
            print(f"gluon_dqk offline {label} {nw} warps (cap {cap}) {ns} slots: {regs} registers, {stack} B stack, "
                  f"{kb} KB shared")


def compare(sname, bt, warps):
    """On a Hopper GPU: `_bwd_dqk`'s arguments from one forward and backward, then both kernels on them."""
    from triton.testing import do_bench

    from hybrid_posttrain.kernels.gdn import chunk

    label, H, HV, K, V = SHAPES[sname]
    B, T = bt
    (q, k, v, g, beta), do = gdn.make(B, T, H, HV, K, V)
    seen, real = [], chunk._run
    chunk._run = lambda kern, grid, *a, **kw: (seen.append((grid, a, kw)) if kern is chunk._bwd_dqk else None) or \
        real(kern, grid, *a, **kw)
    saved_cfg = chunk.CONFIG["dqk_gluon"]
    chunk.CONFIG["dqk_gluon"] = False
    try:
        xs = [x.detach().requires_grad_(True) for x in (q, k, v, g, beta)]
        o, _ = chunk.chunk_gated_delta_rule(*xs, use_qk_l2norm_in_kernel=True)
        torch.autograd.grad(o, xs, do)
    finally:
        chunk._run = real
        chunk.CONFIG["dqk_gluon"] = saved_cfg
    grid, a, kw = seen[0]
    (q2, k2, gc, hbuf, dhbuf, vnew, do2, dq, dkp, dgp, ci, scale, rq, rk, TT) = a

    def triton_dqk():
        dq.zero_()
        real(chunk._bwd_dqk, grid, q2, k2, gc, hbuf, dhbuf, vnew, do2, dq, dkp, dgp, ci, scale, rq, rk, TT, **kw)

    dkp.fill_(float("nan"))
    dgp.fill_(float("nan"))
    triton_dqk()
    want = [x.clone() for x in (dq, dkp, dgp)]
    t = [do_bench(triton_dqk, warmup=25, rep=100, return_mode="median") for _ in range(2)]
    print(f"gluon_dqk {label} {B}x{T} triton _bwd_dqk: {t[0]:.3f} / {t[1]:.3f} ms", flush=True)
    for w in warps:
        nw, cap, ns = with_slots(w, K)
        dkp.fill_(float("nan"))  # poisoned: every element must be written
        dgp.fill_(float("nan"))

        def gluon_dqk(nw=nw, cap=cap, ns=ns):
            dq.zero_()
            dg.run(q2, k2, gc, hbuf, dhbuf, vnew, do2, dq, dkp, dgp, ci, scale, rq, rk, TT, grid, kw["GA"],
                   num_warps=nw, maxnreg=cap, nslot=ns)

        what = f"gluon_dqk {label} {B}x{T} gluon {nw} warps (cap {cap}) {ns} slots"
        try:
            gluon_dqk()
            torch.cuda.synchronize()
        except Exception as e:  # noqa: BLE001  (report and go on to the next form)
            print(f"{what}: ERROR {type(e).__name__}: {str(e)[:1500]}", flush=True)
            continue
        got = [x.clone() for x in (dq, dkp, dgp)]
        errs = ", ".join(f"{n} {((x.float() - y.float()).norm() / y.float().norm()).item():.1e}"
                         for n, x, y in zip(("dq", "dkp", "dgp"), got, want))
        t = [do_bench(gluon_dqk, warmup=25, rep=100, return_mode="median") for _ in range(2)]
        print(f"{what}: {t[0]:.3f} / {t[1]:.3f} ms; against triton's: {errs}; host {host_us(gluon_dqk):.0f} us a "
              f"launch (triton's {host_us(triton_dqk):.0f})", flush=True)


def host_us(fn, n=50):
    """The host's time a call of fn (a launch and dq's zeroing), over n calls queued without a wait."""
    import time

    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    t1 = time.perf_counter()
    torch.cuda.synchronize()
    return (t1 - t0) / n * 1e6


def main():
    shapes, bts, warps, off = cli("gluon_dqk.py", __doc__, "8x4096", "", parts=3)
    if off:
        return offline(shapes, warps)
    for sname in shapes:
        for bt in bts:
            compare(sname, bt, warps)


if __name__ == "__main__":
    run_script(main)  # a kernel knob the driver refuses (KernelEnvError): one line, exit 2
