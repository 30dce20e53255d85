"""Session 16: does a minimal kernel reproduce the small-V failure (Triton 3.6, sm_90)? u = T @ v over V blocks,
T an fp32 [64, 64] tile in registers cast to fp16 (as _fwd_prep64's u), against torch."""
import torch
import triton
import triton.language as tl


@triton.jit
def k_u(T_ptr, v_ptr, u_ptr, V: tl.constexpr, BV: tl.constexpr, SPLIT: tl.constexpr, TRANS: tl.constexpr):
    pid = tl.program_id(0)
    rt = tl.arange(0, 64)
    T = tl.load(T_ptr + pid * 4096 + rt[:, None] * 64 + rt[None, :])
    if TRANS:
        T = tl.trans(T)
    hi = T.to(tl.float16)
    lo = (T - hi.to(tl.float32)).to(tl.float16)
    for i_v in range(tl.cdiv(V, BV)):
        cv = i_v * BV + tl.arange(0, BV)
        m = (cv < V)[None, :]
        b_v = tl.load(v_ptr + pid * 64 * V + rt[:, None] * V + cv[None, :], mask=m, other=0.0)
        u = tl.dot(hi, b_v)
        if SPLIT:
            u += tl.dot(lo, b_v)
        tl.store(u_ptr + pid * 64 * V + rt[:, None] * V + cv[None, :], u.to(tl.float16), mask=m)


torch.manual_seed(0)
P = 264
for V, BV in ((32, 32), (32, 16), (16, 16), (48, 32), (64, 64), (64, 32)):
    for split in (False, True):
        for trans in (False, True):
            for stages, warps, nreg in ((3, 4, None), (2, 4, None), (3, 4, 168), (1, 4, None)):
                T = torch.randn(P, 64, 64, device="cuda") / 8
                v = torch.randn(P, 64, V, device="cuda", dtype=torch.float16)
                u = torch.full((P, 64, V), float("nan"), device="cuda", dtype=torch.float16)
                kw = dict(num_stages=stages, num_warps=warps, **({"maxnreg": nreg} if nreg else {}))
                k_u[(P,)](T, v, u, V=V, BV=BV, SPLIT=split, TRANS=trans, **kw)
                Tm = T.transpose(1, 2) if trans else T
                ref = Tm.double() @ v.double()
                err = ((u.double() - ref).norm() / ref.norm()).item()
                print(f"{'BAD' if not err < 1e-2 else 'ok '} V={V} BV={BV} split={split} trans={trans} "
                      f"stages={stages} warps={warps} maxnreg={nreg}: {err:.1e}", flush=True)
