"""The backward's Gluon kernels (`hybrid_posttrain/kernels/gdn/dqk_gluon.py`, `wy_gluon.py`), and the prototype of the
forward's prep in Gluon (`prep_gluon.py`, not yet run on a GPU), against the Triton `_bwd_dqk` / `_bwd_wy` /
`_fwd_prep64`: one forward and backward of `chunk` at a head shape with the Triton kernel's launch arguments
recorded, then both kernels on those arguments (the Gluon one's outputs poisoned with NaN first), their outputs
compared (relative), two do_bench medians of each, and the host's time a launch. `--warps` items are W[:R[:S[:B]]]:
warps, a register cap (0: none), the tile slots (0: the rule's) and the value block (64; 32 for `dqk` and `prep`
only); none given: the kernel's own rules. `--offline` compiles for sm_90 without a GPU and prints registers, stack,
shared memory and a hash of the PTX (the same after a change: the same code).

    python3 benchmarks/gluon_bwd.py [--kernel dqk|wy|prep] [--shapes qwen,olmo] [--bt 8x4096] [--warps 4,8:128,4:0:1]
    python3 benchmarks/gluon_bwd.py --offline [--kernel dqk|wy|prep] [--shapes qwen,olmo] [--warps ...]       # no GPU
"""

from __future__ import annotations

import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import gdn  # noqa: E402
from benchmarks.gluon_out import SHAPES, cli, cpu_buffers, sm90_resources, with_rule  # noqa: E402
from benchmarks.train_step import fail, run_script  # noqa: E402
from hybrid_posttrain.kernels.gdn import dqk_gluon, prep_gluon, wy_gluon  # noqa: E402

# per kernel: the Gluon module, its kernel's name there, the Triton kernel's name in `chunk` (the CONFIG switch is the
# module's name: `switch`), the recorded arguments' output names (by position), the position of the output added
# atomically into zeros where value heads are grouped (zeroed before each run; None: none), the fp32 pointer arguments
# of the Gluon kernel (offline signatures), and whether it takes value blocks of 32 (`bv`)
KERNELS = {
    "dqk": (dqk_gluon, "_dqk_gl", "_bwd_dqk", {7: "dq", 8: "dkp", 9: "dgp"}, 7, {"gc", "rq_in", "rk_in", "dgp"}, True),
    "wy": (wy_gluon, "_wy_gl", "_bwd_wy", {10: "dk", 11: "dv", 12: "dg", 13: "dbeta"}, 10, {"gc", "dgp", "rk_in"},
           False),
    "prep": (prep_gluon, "_prep_gl", "_fwd_prep64", {4: "gc", 5: "rk", 6: "Ai", 7: "w", 8: "u"}, None,
             {"g", "gc_out", "rk_out"}, True),
}


def switch(mod) -> str:
    """The CONFIG switch of a Gluon module (chunk.CONFIG's key is the module's own name)."""
    return mod.__name__.rsplit(".", 1)[1]


def offline(kname, shapes, warps):
    """Compile the Gluon kernel for sm_90 (no GPU) and print registers, stack and shared memory."""
    mod, fname, _, _, _, f32, _ = KERNELS[kname]
    fn = getattr(mod, fname)
    for sname in shapes:
        label, H, HV, K, V = SHAPES[sname]
        q, k, hbuf, vnew = cpu_buffers(H, HV, K, V, rows=64)
        for w in warps:
            nw, cap, ns, bv = with_rule(w, K, mod.warps, mod.slots)
            if kname == "dqk":
                descs, consts = mod.args(q, k, hbuf, hbuf, vnew, vnew, nslot=ns, bv=bv)
            elif kname == "prep":
                descs, consts = mod.args(k, vnew, bv=bv)
            else:
                Ai = torch.empty(64, HV, 64, dtype=q.dtype)
                descs, consts = mod.args(k, vnew, Ai, hbuf, vnew, vnew, nslot=ns)
            regs, stack, kb, h = sm90_resources(fn, descs, consts if kname == "prep" else dict(consts, GA=HV > H),
                                                f32, nw, cap)
            print(f"gluon_{kname} offline {label} {nw} warps (cap {cap}) {ns} slots of {bv}: {regs} registers, "
                  f"{stack} B stack, {kb} KB shared, PTX {h}")


def compare(kname, sname, bt, warps):
    """On a Hopper GPU: the Triton kernel's arguments from one forward and backward, then both kernels on them."""
    from triton.testing import do_bench

    from hybrid_posttrain.kernels.gdn import chunk

    mod, _, tname, outs, zi, _, _ = KERNELS[kname]
    tkern = getattr(chunk, tname)
    label, H, HV, K, V = SHAPES[sname]
    B, T = bt
    (q, k, v, g, beta), do = gdn.make(B, T, H, HV, K, V)
    seen, real = [], chunk._run
    chunk._run = lambda kern, grid, *a, **kw: (seen.append((grid, a, kw)) if kern is tkern else None) or \
        real(kern, grid, *a, **kw)
    saved_cfg = {switch(m[0]): chunk.CONFIG[switch(m[0])] for m in KERNELS.values()}  # recorded: Triton kernels
    chunk.CONFIG.update({n: False for n in saved_cfg})
    try:
        xs = [x.detach().requires_grad_(True) for x in (q, k, v, g, beta)]
        o, _ = chunk.chunk_gated_delta_rule(*xs, use_qk_l2norm_in_kernel=True)
        torch.autograd.grad(o, xs, do)
    finally:
        chunk._run = real
        chunk.CONFIG.update(saved_cfg)
    grid, a, kw = seen[0]
    # the Gluon run's flags after the grid: GA, or for the prep STORE_AI and SPLIT
    flags = (kw["STORE_AI"], kw["SPLIT"]) if kname == "prep" else (kw["GA"], )

    def zero():
        if zi is not None:
            a[zi].zero_()

    def poison():
        for i in outs:
            a[i].fill_(float("nan"))

    def triton_kernel():
        zero()
        real(tkern, grid, *a, **kw)

    poison()
    triton_kernel()
    want = {n: a[i].clone() for i, n in outs.items()}
    t = [do_bench(triton_kernel, warmup=25, rep=100, return_mode="median") for _ in range(2)]
    print(f"gluon_{kname} {label} {B}x{T} triton {tname}: {t[0]:.3f} / {t[1]:.3f} ms", flush=True)
    for w in warps:
        nw, cap, ns, bv = with_rule(w, K, mod.warps, mod.slots)
        poison()

        def gluon_kernel(nw=nw, cap=cap, ns=ns, bv=bv):
            zero()
            mod.run(*a, grid, *flags, num_warps=nw, maxnreg=cap, nslot=ns, **({"bv": bv} if bv != 64 else {}))

        what = f"gluon_{kname} {label} {B}x{T} gluon {nw} warps (cap {cap}) {ns} slots of {bv}"
        try:
            gluon_kernel()
            torch.cuda.synchronize()
        except Exception as e:  # noqa: BLE001  (report and go on to the next form)
            print(f"{what}: ERROR {type(e).__name__}: {str(e)[:1500]}", flush=True)
            continue
        errs = ", ".join(f"{n} {((a[i].float() - want[n].float()).norm() / want[n].float().norm()).item():.1e}"
                         for i, n in outs.items())
        t = [do_bench(gluon_kernel, warmup=25, rep=100, return_mode="median") for _ in range(2)]
        print(f"{what}: {t[0]:.3f} / {t[1]:.3f} ms; against triton's: {errs}; host {host_us(gluon_kernel):.0f} us a "
              f"launch (triton's {host_us(triton_kernel):.0f})", flush=True)


def host_us(fn, n=50):
    """The host's time a call of fn (a launch and one zeroing), over n calls queued without a wait."""
    import time

    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    t1 = time.perf_counter()
    torch.cuda.synchronize()
    return (t1 - t0) / n * 1e6


def main():
    shapes, bts, warps, off, kname = cli("gluon_bwd.py", __doc__, "8x4096", "", kernels=list(KERNELS))
    if not KERNELS[kname][-1] and any(len(w) > 3 and w[3] != 64 for w in warps):
        fail(f"gluon_bwd.py: --kernel {kname} takes value blocks of 64 only")
    if off:
        return offline(kname, shapes, warps)
    for sname in shapes:
        for bt in bts:
            compare(kname, sname, bt, warps)


if __name__ == "__main__":
    run_script(main)  # a kernel knob the driver refuses (KernelEnvError): one line, exit 2
