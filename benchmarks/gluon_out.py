"""The Gluon output kernel (`hybrid_posttrain/kernels/gdn/out_gluon.py`) against the Triton `_fwd_out` on the same
saved buffers of one no-grad forward (`chunk._fwd`): the largest relative difference of o, the largest absolute one
of 1/||q||, and two do_bench medians of each kernel alone, per shape and B x T. `--offline` compiles the Gluon kernel
for sm_90 without a GPU and prints its registers, stack and shared memory.

    python3 benchmarks/gluon_out.py [--shapes qwen,olmo] [--bt 8x4096,2x4096,1x32768] [--warps 4,8]   # a Hopper GPU
    python3 benchmarks/gluon_out.py --offline [--shapes qwen,olmo] [--warps 4,8]                    # no GPU
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import gdn  # noqa: E402
from benchmarks.train_step import fail  # noqa: E402  (user errors: one line, exit 2)
from hybrid_posttrain.kernels.gdn import out_gluon as og  # noqa: E402

# the table's shapes, one key block of 64 columns (no second block) and one of 64 + 16
SHAPES = dict(gdn.SHAPES, k64=("K64-grouped", 2, 4, 64, 64), k80=("K80", 2, 2, 80, 64))


def tensordesc(box):
    """The signature type of a host TMA descriptor of bf16 [box] with its default shared layout (offline compiles)."""
    gl = og.gl
    return f"tensordesc<bf16{box},{gl.NVMMASharedLayout.get_default_for(box, gl.bfloat16)!r}>"


def sm90_resources(fn, descs, consts, f32, num_warps, maxnreg=None):
    """Compile the Gluon kernel fn for sm_90 without a GPU and return (registers, stack bytes, shared KB) from Triton's
    bundled cuobjdump. descs: {argument: `tensordesc` type}; consts: the constexprs; f32: the fp32 pointer arguments
    (other pointers bf16; cinfo / ginfo int32; scale fp32; TT int32)."""
    import glob
    import re
    import subprocess
    import tempfile

    import triton
    from triton.backends.compiler import GPUTarget
    from triton.experimental.gluon._runtime import GluonASTSource

    found = glob.glob(os.path.join(os.path.dirname(triton.__file__), "backends/nvidia/bin/cuobjdump"))
    if not found:
        fail("--offline: this Triton has no bundled cuobjdump (backends/nvidia/bin)")
    sig = {}
    for a in fn.arg_names:
        if a in consts:
            sig[a] = "constexpr"
        elif a in descs:
            sig[a] = descs[a]
        else:
            sig[a] = {"scale": "fp32", "TT": "i32", "ginfo": "*i32", "cinfo": "*i32"}.get(
                a, "*fp32" if a in f32 else "*bf16")
    ck = triton.compile(GluonASTSource(fn=fn, signature=sig, constexprs=dict(consts, num_warps=num_warps)),
                        target=GPUTarget("cuda", 90, 32),
                        options={"num_warps": num_warps, **({"maxnreg": maxnreg} if maxnreg else {})})
    with tempfile.NamedTemporaryFile(suffix=".cubin") as fh:
        fh.write(ck.asm["cubin"])
        fh.flush()
        out = subprocess.run([found[0], "--dump-resource-usage", fh.name], capture_output=True, text=True).stdout
    m = re.search(r"REG:(\d+) STACK:(\d+)", out)
    return int(m[1]), int(m[2]), round(ck.metadata.shared / 1024)


def offline(shapes, warps):
    """Compile `_out_gl` for sm_90 (no GPU) and print registers, stack and shared memory."""
    for sname in shapes:
        label, H, HV, K, V = SHAPES[sname]
        W1, W2 = og.key_blocks(K)
        td = tensordesc
        descs = {"qa_desc": td([128, W1]), "ka_desc": td([128, W1]), "qb_desc": td([128, W2 or W1]),
                 "kb_desc": td([128, W2 or W1]), "ha_desc": td([W1, og.BV]), "hb_desc": td([W2 or W1, og.BV]),
                 "d_desc": td([128, og.BV])}
        for nw, *nreg in warps:
            if nw is None:  # the kernel's own rule
                nw, r = og.warps(K)
                nreg = [r] if r else []
            consts = dict(H=H, HV=HV, K=K, V=V, W1=W1, W2=W2, BV=og.BV, NSLOT=og.slots(K), HS=2, DT=og.gl.bfloat16)
            regs, stack, kb = sm90_resources(og._out_gl, descs, consts, {"gc", "rk", "rq_out"}, nw,
                                             nreg[0] if nreg else None)
            print(f"gluon_out offline {label} {nw} warps (cap {nreg[0] if nreg else None}): {regs} registers, "
                  f"{stack} B stack, {kb} KB shared")


def compare(label, H, HV, K, V, bt, warps):
    """One shape and B x T on the GPU: the two kernels on one forward's buffers."""
    from triton.testing import do_bench

    make = gdn.make
    from hybrid_posttrain.kernels.gdn import chunk

    B, T = bt
    (q, k, v, g, beta), _ = make(B, T, H, HV, K, V)
    TT = B * T
    q2, k2, v2 = (x.reshape(TT, *x.shape[2:]).contiguous() for x in (q, k, v))
    g2, b2 = g.reshape(TT, HV).contiguous(), beta.reshape(TT, HV).contiguous()
    cu = tuple(range(0, TT + 1, T))
    scale = K ** -0.5
    saved_cfg = chunk.CONFIG["out_gluon"]
    chunk.CONFIG["out_gluon"] = False
    try:
        with torch.no_grad():
            _, _, saved = chunk._fwd(q2, k2, v2, g2, b2, scale, None, False, cu, True, grad=False)
    finally:
        chunk.CONFIG["out_gluon"] = saved_cfg
    gc, rk, _, _, _, hbuf, vnew = saved
    ginfo, NG, _ = chunk._groups(cu, 2, "cuda")
    BK = chunk._cfg(K, V)[0]
    L = chunk.launches(K, V, False, B * HV, q.device)
    ko = chunk._kw(L, "_fwd_out", dict(H=H, HV=HV, K=K, V=V, BK=BK, L2=True, DT=chunk._TL[q.dtype]))
    grid = chunk._chunk_grid(NG, HV)
    o_tr, rq_tr = torch.empty_like(v2), torch.empty(HV, TT, device="cuda")

    def triton_out():
        chunk._run(chunk._fwd_out, grid, q2, k2, gc, rk, rq_tr, hbuf, vnew, o_tr, ginfo, scale, TT, S=2, HS=2, **ko)

    triton_out()
    t = [do_bench(triton_out, warmup=25, rep=100, return_mode="median") for _ in range(2)]
    print(f"gluon_out {label} {B}x{T} triton _fwd_out: {t[0]:.3f} / {t[1]:.3f} ms", flush=True)
    for nw, *nreg in warps:
        if nw is None:  # the kernel's own rule
            nw, r = og.warps(K)
            nreg = [r] if r else []
        o_gl, rq_gl = torch.full_like(v2, float("nan")), torch.full((HV, TT), float("nan"), device="cuda")

        def gluon_out(nw=nw, nreg=nreg, o_gl=o_gl, rq_gl=rq_gl):
            og.run(q2, k2, gc, rk, rq_gl, hbuf, vnew, o_gl, ginfo, NG, scale, 2, grid, num_warps=nw,
                   maxnreg=nreg[0] if nreg else None)

        gluon_out()
        torch.cuda.synchronize()
        err = ((o_gl.float() - o_tr.float()).norm() / o_tr.float().norm()).item()
        err_rq = (rq_gl - rq_tr).abs().max().item()
        t = [do_bench(gluon_out, warmup=25, rep=100, return_mode="median") for _ in range(2)]
        print(f"gluon_out {label} {B}x{T} gluon {nw} warps (cap {nreg[0] if nreg else None}): {t[0]:.3f} / {t[1]:.3f} ms; o against triton's {err:.1e} "
              f"(relative), 1/||q|| {err_rq:.1e} (absolute)", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", default="qwen,olmo")
    ap.add_argument("--bt", default="8x4096,2x4096,1x32768")
    ap.add_argument("--warps", default="", help="warps (and :register cap) to try, e.g. 4,8:128; default: the "
                    "kernel's own rule (out_gluon.warps)")
    ap.add_argument("--offline", action="store_true", help="compile for sm_90 only (no GPU) and print resources")
    args = ap.parse_args()
    shapes, bts = args.shapes.split(","), args.bt.split(",")
    for sname in shapes:
        if sname not in SHAPES:
            fail(f"gluon_out.py: unknown shape {sname!r} (known: {', '.join(SHAPES)})")
        if og.key_blocks(SHAPES[sname][3]) is None:
            fail(f"gluon_out.py: shape {sname!r}: the Gluon kernel does not take key dim {SHAPES[sname][3]} "
                 "(64, 80, 96 or 128)")
    gdn.check_shapes("gluon_out.py", [], bts)
    bts = [tuple(int(x) for x in bt.split("x")) for bt in bts]
    try:  # W or W:R (R a register cap); none given: the kernel's rule, (None,)
        warps = [tuple(int(x) for x in w.split(":")) for w in args.warps.split(",")] if args.warps else [(None,)]
    except ValueError:
        fail(f"gluon_out.py: --warps {args.warps!r}: expected warps like 4,8 or 8:128 (with a register cap)")
    if args.warps and any(w[0] not in (4, 8) or len(w) > 2 for w in warps):
        fail(f"gluon_out.py: --warps {args.warps!r}: 4 or 8 warps, each optionally :registers")
    if og.gluon is None:
        fail(f"gluon_out.py: this Triton has no Gluon for Hopper ({og.IMPORT_ERROR})")
    if args.offline:
        return offline(shapes, warps)
    if not torch.cuda.is_available() or torch.cuda.get_device_capability()[0] != 9:
        fail("gluon_out.py needs a Hopper GPU (sm_90); --offline compiles without one")
    for sname in shapes:
        label, H, HV, K, V = SHAPES[sname]
        for bt in bts:
            compare(label, H, HV, K, V, bt, warps)


if __name__ == "__main__":
    main()
