"""The Gluon output kernel (`hybrid_posttrain/kernels/gdn/out_gluon.py`) against the Triton `_fwd_out` on the same
saved buffers of one no-grad forward (`chunk._fwd`): the largest relative difference of o, the largest absolute one
of 1/||q||, and two do_bench medians of each kernel alone, per shape and B x T. `--offline` compiles the Gluon kernel
for sm_90 without a GPU and prints its registers, stack, shared memory and a hash of its PTX (`ptx_hash`).

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
from benchmarks.train_step import fail, run_script  # noqa: E402  (user errors: one line, exit 2)
from hybrid_posttrain.kernels.gdn import out_gluon as og  # noqa: E402

# the table's shapes, one key block of 64 columns (no second block) and one of 64 + 16
SHAPES = dict(gdn.SHAPES, k64=("K64-grouped", 2, 4, 64, 64), k80=("K80", 2, 2, 80, 64))


def sm90_resources(fn, descs, consts, f32, num_warps, maxnreg=None):
    """Compile the Gluon kernel fn for sm_90 without a GPU and return (registers, stack bytes, shared KB) from Triton's
    bundled cuobjdump, and a hash of its PTX without line information (`ptx_hash`: a refactor that generates the same
    code keeps it, which checks a change to a kernel that cannot run here). descs: its leading host TMA descriptors (built on CPU tensors: their types are what Triton
    specialises on); consts: the constexprs; f32: the fp32 pointer arguments (other pointers bf16; cinfo / ginfo int32;
    scale fp32; TT int32)."""
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
    sig = dict(zip(fn.arg_names, map(og.desc_type, descs)))
    for a in fn.arg_names[len(descs):]:
        if a in consts or a == "num_warps":
            sig[a] = "constexpr"
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
    return int(m[1]), int(m[2]), round(ck.metadata.shared / 1024), ptx_hash(ck.asm["ptx"])


def ptx_hash(ptx: str) -> str:
    """12 hex digits of a hash of PTX text without its line information (.loc / .file directives, comments, labels
    and the debug sections), which moves with the source lines rather than with the code."""
    import hashlib
    import re

    body = "\n".join(x for x in ptx.splitlines() if not re.match(r"\s*(\.loc|\.file|//|\$L__)", x))
    return hashlib.sha1(re.sub(r"\.section\s+\.debug.*", "", body, flags=re.S).strip().encode()).hexdigest()[:12]


def cpu_buffers(H, HV, K, V, rows=128):
    """q, k, a one-state buffer and a [tokens, HV, V] tensor on the CPU (bf16) of one shape: what the kernels'
    descriptors are built on for an offline compile."""
    e = torch.empty
    return (e(rows, H, K, dtype=torch.bfloat16), e(rows, H, K, dtype=torch.bfloat16),
            e(1, HV, K, V, dtype=torch.bfloat16), e(rows, HV, V, dtype=torch.bfloat16))


def with_rule(w, K, warps=og.warps, slots=og.slots):
    """(warps, register cap, slots, value block) of one --warps item W[:R[:S[:B]]] (R 0: no cap), the kernel's own
    rules (warps, slots; the value block 64) where it is (None,) or leaves them out."""
    if w[0] is None:
        return warps(K) + (slots(K), og.BV)
    bv = w[3] if len(w) > 3 else og.BV
    return w[0], (w[1] or None) if len(w) > 1 else None, w[2] if len(w) > 2 and w[2] else slots(K, bv), bv


def offline(shapes, warps):
    """Compile `_out_gl` for sm_90 (no GPU) and print registers, stack and shared memory."""
    for sname in shapes:
        label, H, HV, K, V = SHAPES[sname]
        q, k, hbuf, vnew = cpu_buffers(H, HV, K, V)
        for w in warps:
            nw, cap, ns, bv = with_rule(w, K)
            descs, consts = og.out_args(q, k, hbuf, vnew, 2, nslot=ns, bv=bv)
            regs, stack, kb, h = sm90_resources(og._out_gl, descs, consts, {"gc", "rk", "rq_out"}, nw, cap)
            print(f"gluon_out offline {label} {nw} warps (cap {cap}) {ns} slots of {bv} columns: {regs} registers, "
                  f"{stack} B stack, {kb} KB shared, PTX {h}")


def compare(label, H, HV, K, V, bt, warps):
    """One shape and B x T on the GPU: the two kernels on one forward's buffers."""
    from triton.testing import do_bench

    from hybrid_posttrain.kernels.gdn import chunk

    B, T = bt
    (q, k, v, g, beta), _ = gdn.make(B, T, H, HV, K, V)
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
    for w in warps:
        nw, cap, ns, bv = with_rule(w, K)
        o_gl, rq_gl = torch.full_like(v2, float("nan")), torch.full((HV, TT), float("nan"), device="cuda")

        def gluon_out(nw=nw, cap=cap, ns=ns, bv=bv, o_gl=o_gl, rq_gl=rq_gl):
            og.run(q2, k2, gc, rk, rq_gl, hbuf, vnew, o_gl, ginfo, scale, 2, grid, num_warps=nw, maxnreg=cap, nslot=ns,
                   bv=bv)

        gluon_out()
        torch.cuda.synchronize()
        err = ((o_gl.float() - o_tr.float()).norm() / o_tr.float().norm()).item()
        err_rq = (rq_gl - rq_tr).abs().max().item()
        t = [do_bench(gluon_out, warmup=25, rep=100, return_mode="median") for _ in range(2)]
        print(f"gluon_out {label} {B}x{T} gluon {nw} warps (cap {cap}) {ns} slots of {bv}: {t[0]:.3f} / {t[1]:.3f} ms; o against "
              f"triton's {err:.1e} (relative), 1/||q|| {err_rq:.1e} (absolute)", flush=True)


def cli(prog, doc, bt_default, warps_default, kernels=None):
    """The command line both Gluon scripts take, checked (bad input: one line, exit 2): (shapes, [(B, T)], [--warps
    items W[:R[:S[:B]]] as tuples: warps, register cap (0: none), slots (0: the rule's) and value block; (None,) for
    the kernels' own rules where none is given], offline, kernel). kernels: the names --kernel takes (the first is
    its default), or None for no --kernel (kernel None)."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    if kernels:
        ap.add_argument("--kernel", default=kernels[0], help=f"one of {', '.join(kernels)}")
    ap.add_argument("--shapes", default="qwen,olmo")
    ap.add_argument("--bt", default=bt_default)
    ap.add_argument("--warps", default=warps_default,
                    help="forms to try, W[:R[:S[:B]]]: warps, register cap (0: none), slots (0: the rule's), value block "
                         "(64 or 32); e.g. 4,8:128,4:0:2:32")
    ap.add_argument("--offline", action="store_true", help="compile for sm_90 only (no GPU) and print resources")
    args = ap.parse_args()
    kernel = getattr(args, "kernel", None)
    if kernels and kernel not in kernels:
        fail(f"{prog}: --kernel {kernel!r}: expected one of {', '.join(kernels)}")
    shapes, bts = args.shapes.split(","), args.bt.split(",")
    for sname in shapes:
        if sname not in SHAPES:
            fail(f"{prog}: unknown shape {sname!r} (known: {', '.join(SHAPES)})")
        if og.key_blocks(SHAPES[sname][3]) is None:
            fail(f"{prog}: shape {sname!r}: the Gluon kernel does not take key dim {SHAPES[sname][3]} "
                 "(64, 80, 96 or 128)")
    gdn.check_shapes(prog, [], bts)
    try:  # W or W:R (R a register cap)
        warps = [tuple(int(x) for x in w.split(":")) for w in args.warps.split(",")] if args.warps else [(None,)]
    except ValueError:
        fail(f"{prog}: --warps {args.warps!r}: expected items W[:R[:S[:B]]] of integers, like 4,8:128,4:0:2:32")
    if args.warps and any(w[0] not in (4, 8) or len(w) > 4 for w in warps):
        fail(f"{prog}: --warps {args.warps!r}: 4 or 8 warps, each optionally :registers[:slots[:value block]]")
    if args.warps and any(len(w) > 2 and w[2] not in (0, 1, 2) for w in warps):
        fail(f"{prog}: --warps {args.warps!r}: slots are 1 or 2 (0: the rule's)")
    if args.warps and any(len(w) > 3 and w[3] not in (32, 64) for w in warps):
        fail(f"{prog}: --warps {args.warps!r}: a value block of 32 or 64")
    if og.gluon is None:
        fail(f"{prog}: this Triton has no Gluon for Hopper ({og.IMPORT_ERROR})")
    if not args.offline and (not torch.cuda.is_available() or torch.cuda.get_device_capability()[0] != 9):
        fail(f"{prog} needs a Hopper GPU (sm_90); --offline compiles without one")
    return shapes, [tuple(int(x) for x in bt.split("x")) for bt in bts], warps, args.offline, kernel


def main():
    shapes, bts, warps, off, _ = cli("gluon_out.py", __doc__, "8x4096,2x4096,1x32768", "")
    if off:
        return offline(shapes, warps)
    for sname in shapes:
        label, H, HV, K, V = SHAPES[sname]
        for bt in bts:
            compare(label, H, HV, K, V, bt, warps)


if __name__ == "__main__":
    run_script(main)  # a kernel knob the driver refuses (KernelEnvError): one line, exit 2
