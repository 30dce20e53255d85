"""PROTOTYPE (session 25, written after the device time was spent; NOT RUN on a GPU, off by default: CONFIG
prep_gluon): the forward's `_fwd_prep64` in Gluon, for Hopper GPUs.

Per (chunk, value head), as `chunk._fwd_prep64` (see its docstring): 1/||k|| and the chunk-local cumulative g (both
stored), A = beta k k^T exp(gc_i - gc_j) (strictly lower) from one product of the raw keys, T = (I + A)^-1 by block
doubling, T stored for the backward (STORE_AI), w = T diag(beta exp(gc) / ||k||) k and u = T diag(beta) v (each as
two products, T's half-precision rounding and its remainder, with SPLIT).

What differs from the Triton kernel:
- k (as exact key blocks) and every V block of v are requested by TMA at the program's start;
- the cumulative sum is a masked [64, 64] row sum, so that gc is at hand in both the row and the column layout;
- all five block-doubling levels (s = 2 .. 32) run as [64, 64] warpgroup MMAs on fp16 operands (fp32 accumulation),
  where the Triton kernel runs the first three as batched [4, 16, 16] TF32 products and only the last two on fp16
  (`prep64_flags` F16). fp16 keeps TF32's 10-bit mantissa; with L2-normalised keys |A_ij| <= 2 and T's entries stay
  within a few units, which is why the rule asks for the L2 norm (as F16 does). A CPU emulation of the doubling
  (fp64, each product's operands rounded to fp16 and its result to fp32; K = 128, unit keys, beta in [0, 2]) put T
  within 7.3e-5 of the exact inverse (with TF32-truncated operands in the first three levels: 2.0e-4), and
  on nearly parallel keys with beta near 2 within 5.5e-3 (8.1e-3), against 8.7e-4 / 3.9e-3 for the exact T rounded
  to bf16, which every use of T sees;
- each level's L (A's off-diagonal blocks of the level) and T go through shared memory as the MMAs' B operands.

Rows past a chunk's last token: TMA reads the next document's keys there, but beta is zero on those rows (masked
load), so their rows of A vanish, and A is strictly lower, so no valid row reads them either; v's rows there meet
beta's zero columns of T diag(beta). T's padding rows are the identity's; they are not stored.

`benchmarks/gluon_bwd.py --kernel prep` compares it with the Triton kernel on one forward's recorded arguments (gc,
1/||k||, T, w and u) and times both; `--offline` compiles it for sm_90.
"""

from __future__ import annotations

import torch

from hybrid_posttrain.kernels._launch import launch

from . import dqk_gluon
from . import out_gluon as og
from .out_gluon import BV, gluon

if gluon is not None:
    from .out_gluon import (
        _aop,
        _barriers,
        _cta_barrier,
        _drop_barriers,
        _load_k,
        _mma,
        _pair_tiles,
        _rows_prog,
        _tma_load,
        fence_async_shared,
        gl,
        mbarrier,
        warpgroup_mma,
        warpgroup_mma_wait,
    )

    @gluon.jit
    def _mm16(a, b_s, acc, aop: gl.constexpr):
        """a (fp32 registers) @ b_s (fp16 [64, 64] in shared memory) on fp16 operands, fp32 accumulation."""
        acc = warpgroup_mma(gl.convert_layout(a.to(gl.float16), aop), b_s, acc, use_acc=False, is_async=True)
        return warpgroup_mma_wait(num_outstanding=0, deps=(acc, ))

    @gluon.jit
    def _hi_lo_mm(x, b_s, acc, aop: gl.constexpr, DT: gl.constexpr, SPLIT: gl.constexpr):
        """x (fp32 registers) @ b_s (DT in shared memory): x's DT rounding, and with SPLIT its remainder as a second
        product (`chunk._hi_lo`), so that the product sees x to about fp32 precision."""
        hi = x.to(DT)
        acc = warpgroup_mma(gl.convert_layout(hi, aop), b_s, acc, use_acc=False, is_async=True)
        if SPLIT:
            acc = warpgroup_mma(gl.convert_layout((x - hi.to(gl.float32)).to(DT), aop), b_s, acc, is_async=True)
        return warpgroup_mma_wait(num_outstanding=0, deps=(acc, ))

    @gluon.jit
    def _prep_gl(ka_desc, kb_desc, v_desc, g, beta, gc_out, rk_out, Ai_out, w_out, u_out, cinfo, TT,
                 H: gl.constexpr, HV: gl.constexpr, K: gl.constexpr, V: gl.constexpr, W1: gl.constexpr,
                 W2: gl.constexpr, BV: gl.constexpr, DT: gl.constexpr, STORE_AI: gl.constexpr, SPLIT: gl.constexpr,
                 SL16: gl.constexpr, num_warps: gl.constexpr):
        """`chunk._fwd_prep64` with L2 and TW = 1: one program a (chunk, value head), the grid's axes as
        `chunk._chunk_head` reads them. SL16: the shared layout of a [64, 64] fp16 tile (the levels' B operands)."""
        i_c, i_hv, i_h, bos, eos = _rows_prog(cinfo, 2, H, HV)
        NV: gl.constexpr = V // BV
        t0 = bos.to(gl.int32)

        bar = _barriers(1)
        ka, kb = _pair_tiles(ka_desc, kb_desc, [64, W1], [64, W2], W2, DT)
        v_s = gl.allocate_shared_memory(DT, [NV, 64, BV], v_desc.layout)
        mbarrier.expect(bar.index(0), (64 * (W1 + W2) + NV * 64 * BV) * 2)
        _load_k(ka_desc, kb_desc, t0, i_h * K, bar.index(0), ka, kb, W1, W2)
        for j in gl.static_range(NV):
            _tma_load(v_desc, [t0, i_hv * V + j * BV], bar.index(0), v_s.index(j))
        l_s = gl.allocate_shared_memory(gl.float16, [64, 64], SL16)
        t_s = gl.allocate_shared_memory(gl.float16, [64, 64], SL16)

        ma: gl.constexpr = _mma(num_warps, W1)
        mb: gl.constexpr = _mma(num_warps, W2 if W2 > 0 else W1)
        m64: gl.constexpr = _mma(num_warps, 64)
        aopa: gl.constexpr = _aop(ma)
        aopb: gl.constexpr = _aop(mb)
        aop64: gl.constexpr = _aop(m64)
        blk: gl.constexpr = gl.BlockedLayout([1, 8], [4, 8], [num_warps, 1], [1, 0])
        rows: gl.constexpr = gl.SliceLayout(1, m64)
        cols: gl.constexpr = gl.SliceLayout(0, m64)

        # per-token values while the tiles fly: beta, and gc = cumsum(g) within the chunk (padding rows continue it
        # with g = 0) as a masked row sum, in the row and the column layout
        r64 = gl.arange(0, 64, layout=rows)
        c64 = gl.arange(0, 64, layout=cols)
        m_r = bos + r64 < eos
        m_c = bos + c64 < eos
        b_r = gl.load(beta + (bos + r64) * HV + i_hv, mask=m_r, other=0.0).to(gl.float32)
        b_c = gl.load(beta + (bos + c64) * HV + i_hv, mask=m_c, other=0.0).to(gl.float32)
        g_c = gl.load(g + (bos + c64) * HV + i_hv, mask=m_c, other=0.0).to(gl.float32)
        gc_r = gl.sum(gl.where(c64[None, :] <= r64[:, None], g_c[None, :], 0.0), 1)
        gc_c = gl.convert_layout(gc_r, cols)
        gl.store(gc_out + (bos + r64) * HV + i_hv, gc_r, mask=m_r)

        mbarrier.wait(bar.index(0), phase=0)
        kk = warpgroup_mma(ka, ka.permute((1, 0)), gl.zeros([64, 64], gl.float32, m64), use_acc=False, is_async=True)
        if W2 > 0:
            kk = warpgroup_mma(kb, kb.permute((1, 0)), kk, is_async=True)
        # 1/||k|| from shared memory while k k^T runs
        rtb = gl.arange(0, 64, layout=gl.SliceLayout(1, blk))
        kf = ka.load(blk).to(gl.float32)
        ss = gl.sum(kf * kf, 1)
        if W2 > 0:
            kf = kb.load(blk).to(gl.float32)
            ss += gl.convert_layout(gl.sum(kf * kf, 1), gl.SliceLayout(1, blk))
        rk_b = gl.rsqrt(ss + 1e-6)
        gl.store(rk_out + i_hv.to(gl.int64) * TT + bos + rtb, rk_b, mask=bos + rtb < eos)
        rk_r = gl.convert_layout(rk_b, rows)
        rk_c = gl.convert_layout(rk_b, cols)
        kk = warpgroup_mma_wait(num_outstanding=0, deps=(kk, ))
        ri = r64[:, None]
        rj = c64[None, :]
        low = ri > rj
        A = gl.where(low, kk * (b_r * rk_r)[:, None] * rk_c[None, :]
                     * gl.exp(gl.where(low, gc_r[:, None] - gc_c[None, :], 0.0)), 0.0)
        # T = (I + A)^-1 by block doubling: T_2 (2x2 blocks) directly, then T_2s = T_s - T_s L_s T_s
        T = gl.where(ri == rj, 1.0, 0.0) - gl.where(ri // 2 == rj // 2, A, 0.0)
        for lv in gl.static_range(1, 6):  # blocks of s = 2 ** lv rows
            L = gl.where((ri >> (lv + 1) == rj >> (lv + 1)) & (ri >> lv != rj >> lv), A, 0.0)
            _cta_barrier()  # the previous level's products have read l_s and t_s
            l_s.store(L.to(gl.float16))
            t_s.store(T.to(gl.float16))
            fence_async_shared()
            _cta_barrier()
            TL = _mm16(T, l_s, gl.zeros([64, 64], gl.float32, m64), aop64)
            T = T - _mm16(TL, t_s, gl.zeros([64, 64], gl.float32, m64), aop64)
        if STORE_AI:  # T for the backward only
            gl.store(Ai_out + ((bos + r64) * HV + i_hv)[:, None] * 64 + c64[None, :], T.to(Ai_out.dtype.element_ty),
                     mask=m_r[:, None])
        # w = T diag(beta exp(gc) / ||k||) k, over the key blocks
        Tw = T * (b_c * gl.exp(gc_c) * rk_c)[None, :]
        wa = _hi_lo_mm(Tw, ka, gl.zeros([64, W1], gl.float32, ma), aopa, DT, SPLIT)
        ra = gl.arange(0, 64, layout=gl.SliceLayout(1, ma))
        ca = gl.arange(0, W1, layout=gl.SliceLayout(0, ma))
        gl.store(w_out + ((bos + ra) * HV + i_hv)[:, None] * K + ca[None, :], wa.to(w_out.dtype.element_ty),
                 mask=(bos + ra < eos)[:, None])
        if W2 > 0:
            wb = _hi_lo_mm(Tw, kb, gl.zeros([64, W2], gl.float32, mb), aopb, DT, SPLIT)
            rb = gl.arange(0, 64, layout=gl.SliceLayout(1, mb))
            cb = W1 + gl.arange(0, W2, layout=gl.SliceLayout(0, mb))
            gl.store(w_out + ((bos + rb) * HV + i_hv)[:, None] * K + cb[None, :], wb.to(w_out.dtype.element_ty),
                     mask=(bos + rb < eos)[:, None])
        # u = T diag(beta) v, a V block at a time
        Tb = T * b_c[None, :]
        cv = gl.arange(0, BV, layout=cols)
        for iv in gl.static_range(NV):
            ub = _hi_lo_mm(Tb, v_s.index(iv), gl.zeros([64, BV], gl.float32, m64), aop64, DT, SPLIT)
            gl.store(u_out + ((bos + r64) * HV + i_hv)[:, None] * V + (iv * BV + cv)[None, :],
                     ub.to(u_out.dtype.element_ty), mask=m_r[:, None])
        _drop_barriers(bar, 1)


def warps(K):
    """(warps, register cap): 4 warps, the prototype's default (not measured). Offline (sm_90): 222-236 registers, no
    stack, 48-52 KB of shared memory (two programs an SM by registers); capped at 168 (three): 192-304 B of stack; 8
    warps: 144-146 registers (one)."""
    return 4, None


def slots(K, bv=BV):
    """Every V block of v is loaded at the start (no slots): 1, for the benchmark scripts' common form."""
    return 1


def fits(kdt, K, V, hopper, enabled=False, l2=True, tw=1, same_dtypes=True) -> bool:
    """The rule of `usable`: CONFIG prep_gluon on (enabled; off by default: never run on a GPU), L2-normalised keys (the
    fp16 levels' bound, as `prep64_flags` F16), T stored as one operand (tw = 1), and what `dqk_gluon.fits` asks of
    the backward's Gluon kernels."""
    return l2 and tw == 1 and dqk_gluon.fits(kdt, K, V, hopper, enabled, True, same_dtypes)


def usable(k, v, Ai, w, u, enabled=False, l2=True, tw=1) -> bool:
    """Whether the Gluon kernel can take this forward's `_fwd_prep64` (`fits`, on k's device). Ai: T's buffer where
    the backward needs it, else None."""
    xs = (k, v, w, u) + ((Ai,) if Ai is not None else ())
    hopper, same = dqk_gluon.tiled(*xs)
    return fits(k.dtype, k.shape[-1], v.shape[-1], hopper, enabled, l2, tw, same)


def args(k, v, split=True, store_ai=True, bv=BV):
    """`_prep_gl`'s descriptors (its first arguments, in order) and constexprs but the warps."""
    H, K = k.shape[1:]
    HV, V = v.shape[1], v.shape[2]
    W1, W2 = og.key_blocks(K)
    return og.k_descs(k, 64) + (og.token_desc(v, 64, bv),), dict(
        H=H, HV=HV, K=K, V=V, W1=W1, W2=W2, BV=bv, DT=og._GL[k.dtype], STORE_AI=store_ai, SPLIT=split,
        SL16=og._layout((64, 64), torch.float16))


def run(k, v, g, beta, gc, rk, Ai, w, u, cinfo, TT, grid, store_ai, split, num_warps=None, maxnreg=None, nslot=None,
        bv=BV):
    """Launch `_prep_gl` on `chunk._fwd_prep64`'s arguments (the same order, then its grid, STORE_AI and SPLIT; Ai
    may be any tensor where store_ai is off). Warps: `warps`, unless given (nslot: unused, the scripts' form)."""
    dqk_gluon.check_warps(num_warps, k.shape[-1])
    if num_warps is None:
        num_warps, maxnreg = warps(k.shape[-1])
    descs, consts = args(k, v, split, store_ai, bv)
    launch(_prep_gl, grid, *descs, g, beta, gc, rk, Ai, w, u, cinfo, TT, **consts, num_warps=num_warps,
           **({"maxnreg": maxnreg} if maxnreg else {}))
