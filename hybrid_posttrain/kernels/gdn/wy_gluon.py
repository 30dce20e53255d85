"""The backward's `_bwd_wy` (gradients through delta = u - w h, the WY form and T: dk, dv, dbeta, dg) in Gluon, for
Hopper GPUs.

Built like the other Gluon kernels (`out_gluon.py`, `dqk_gluon.py`): every tile of a program is requested by TMA at
its start (k and T of the chunk; h, v, delta and d(delta) of the first one or two V blocks), the key columns are exact
blocks (96 as 64 + 32), and the products are warpgroup MMAs issued asynchronously. A V block's d(beta v) = T^T
d(delta) is waited for alone; the block's other four products (d(delta) v^T, d(beta exp(gc) k) through h, dA through
delta) run while its dv is stored.

Rows past a chunk's last token: TMA reads a [64, *] tile from the chunk's first token whatever the chunk's length, so
its rows past the end hold the next document's tokens (the Triton kernel's masked loads give zeros). T's columns
there are zeroed before the loop (so d(beta v) takes nothing from them), and every other product through such rows
either lands in rows that are not stored or is masked out (A's strictly-lower, both-valid mask), as in `_bwd_wy`.

H100 (session 25, call 4; the kernel alone on one backward's arguments, 8x4096, `benchmarks/gluon_bwd.py --kernel
wy`): Qwen3-Next 1.022 ms on 4 warps against the Triton kernel's 1.247, Olmo-Hybrid 1.054 against 1.316; dk within
2.3e-5 of the Triton kernel's (relative), dv equal, dg 4.4e-7, dbeta 4.0e-6. One slot instead of two: 1.058 / 1.098.

Same inputs and outputs as `chunk._bwd_wy` with TW = 1 and RB. `usable` says where it runs; elsewhere, and on the CPU
(the Triton interpreter does not run Gluon), `chunk._bwd` launches `_bwd_wy`.
"""

from __future__ import annotations

from hybrid_posttrain.kernels._launch import launch

from . import dqk_gluon
from . import out_gluon as og
from .dqk_gluon import check_warps
from .out_gluon import BV, gluon

if gluon is not None:
    from .dqk_gluon import _rows_sum, _store_rows
    from .out_gluon import (
        _aop,
        _barriers,
        _cta_barrier,
        _drop_barriers,
        _load_k,
        _load_state,
        _mma,
        _pair_tiles,
        _rows_prog,
        _state_tiles,
        _tma_load,
        fence_async_shared,
        gl,
        mbarrier,
        warpgroup_mma,
        warpgroup_mma_wait,
    )

    @gluon.jit
    def _wy_gl(ka_desc, kb_desc, t_desc, ha_desc, hb_desc, v_desc, d_desc, dd_desc,
               gc, beta, dkp, dgp, dk, dv, dg, dbeta, cinfo, rk_in, TT,
               H: gl.constexpr, HV: gl.constexpr, K: gl.constexpr, V: gl.constexpr, W1: gl.constexpr,
               W2: gl.constexpr, BV: gl.constexpr, NSLOT: gl.constexpr, L2: gl.constexpr, DT: gl.constexpr,
               GA: gl.constexpr, num_warps: gl.constexpr):
        """`chunk._bwd_wy` with TW = 1 and RB (see its docstring for the algebra): one program a (chunk, value head),
        the grid's axes as `chunk._chunk_head` reads them. Key columns as exact blocks of W1 and W2; a V block's h
        ([W1 + W2, BV]), v, delta and d(delta) ([64 tokens, BV]) in NSLOT slots (`slots`)."""
        i_c, i_hv, i_h, bos, eos = _rows_prog(cinfo, 2, H, HV)
        NV: gl.constexpr = V // BV
        t0 = bos.to(gl.int32)
        hrow = ((i_c.to(gl.int64) * HV + i_hv) * K).to(gl.int32)

        bar = _barriers(3)
        ka, kb = _pair_tiles(ka_desc, kb_desc, [64, W1], [64, W2], W2, DT)
        t_s = gl.allocate_shared_memory(DT, [64, 64], t_desc.layout)
        mbarrier.expect(bar.index(0), (64 * (W1 + W2) + 64 * 64) * 2)
        _load_k(ka_desc, kb_desc, t0, i_h * K, bar.index(0), ka, kb, W1, W2)
        _tma_load(t_desc, [t0, i_hv * 64], bar.index(0), t_s)
        ha_s, hb_s = _state_tiles(ha_desc, hb_desc, NSLOT, W1, W2, BV, DT)
        v_s = gl.allocate_shared_memory(DT, [NSLOT, 64, BV], v_desc.layout)
        d_s = gl.allocate_shared_memory(DT, [NSLOT, 64, BV], d_desc.layout)
        dd_s = gl.allocate_shared_memory(DT, [NSLOT, 64, BV], dd_desc.layout)
        p_s = gl.allocate_shared_memory(DT, [64, 64], t_desc.layout)
        NBV: gl.constexpr = (K + 3 * 64) * BV * 2  # h, v, delta, d(delta) of a V block
        for j in gl.static_range(NSLOT):
            if j < NV:
                mbarrier.expect(bar.index(1 + j), NBV)
                _load_state(ha_desc, hb_desc, hrow, j * BV, bar.index(1 + j), ha_s.index(j), hb_s.index(j), W1, W2)
                _tma_load(v_desc, [t0, i_hv * V + j * BV], bar.index(1 + j), v_s.index(j))
                _tma_load(d_desc, [t0, i_hv * V + j * BV], bar.index(1 + j), d_s.index(j))
                _tma_load(dd_desc, [t0, i_hv * V + j * BV], bar.index(1 + j), dd_s.index(j))

        ma: gl.constexpr = _mma(num_warps, W1)
        mb: gl.constexpr = _mma(num_warps, W2 if W2 > 0 else W1)
        m64: gl.constexpr = _mma(num_warps, 64)
        aopa: gl.constexpr = _aop(ma)
        aopb: gl.constexpr = _aop(mb)
        aop64: gl.constexpr = _aop(m64)
        rows: gl.constexpr = gl.SliceLayout(1, m64)
        cols: gl.constexpr = gl.SliceLayout(0, m64)

        # per-token values while the tiles fly
        r64 = gl.arange(0, 64, layout=rows)
        c64 = gl.arange(0, 64, layout=cols)
        m_r = bos + r64 < eos
        m_c = bos + c64 < eos
        g_r = gl.load(gc + (bos + r64) * HV + i_hv, mask=m_r, other=0.0)
        g_c = gl.load(gc + (bos + c64) * HV + i_hv, mask=m_c, other=0.0)
        b_r = gl.load(beta + (bos + r64) * HV + i_hv, mask=m_r, other=0.0).to(gl.float32)
        rk_r = gl.load(rk_in + i_hv.to(gl.int64) * TT + bos + r64, mask=m_r, other=0.0)
        rk_c = gl.load(rk_in + i_hv.to(gl.int64) * TT + bos + c64, mask=m_c, other=0.0)

        mbarrier.wait(bar.index(0), phase=0)
        # T^T as the A operand of d(beta v) = T^T d(delta), its columns (T's rows) past the chunk's end zeroed
        tT = t_s.permute((1, 0)).load(m64)
        tT = gl.convert_layout(gl.where(m_c[None, :], tT, 0.0).to(DT), aop64)

        dkba = gl.zeros([64, W1], gl.float32, ma)  # dvb h^T (d(beta exp(gc) k) = -dkb)
        dkbb = gl.zeros([64, W2 if W2 > 0 else W1], gl.float32, mb)
        dA = gl.zeros([64, 64], gl.float32, m64)  # dvb delta^T (dA = -dA here)
        Mv = gl.zeros([64, 64], gl.float32, m64)  # d(delta) v^T
        zero = gl.zeros([64, BV], gl.float32, m64)
        for iv in gl.static_range(NV):
            sl = iv % NSLOT
            mbarrier.wait(bar.index(1 + sl), phase=(iv // NSLOT) % 2)
            ddv = dd_s.index(sl)
            dvb = warpgroup_mma(tT, ddv, zero, use_acc=False, is_async=True)
            Mv = warpgroup_mma(ddv, v_s.index(sl).permute((1, 0)), Mv, is_async=True)
            dvb = warpgroup_mma_wait(num_outstanding=1, deps=(dvb, ))
            dvc = dvb.to(DT)
            dkba = warpgroup_mma(gl.convert_layout(dvc, aopa), ha_s.index(sl).permute((1, 0)), dkba, is_async=True)
            if W2 > 0:
                dkbb = warpgroup_mma(gl.convert_layout(dvc, aopb), hb_s.index(sl).permute((1, 0)), dkbb,
                                     is_async=True)
            dA = warpgroup_mma(gl.convert_layout(dvc, aop64), d_s.index(sl).permute((1, 0)), dA, is_async=True)
            # dv = d(beta v) beta, while the products run
            off = ((bos + r64) * HV + i_hv)[:, None] * V + (iv * BV + gl.arange(0, BV, layout=cols))[None, :]
            gl.store(dv + off, (dvb * b_r[:, None]).to(dv.dtype.element_ty), mask=m_r[:, None])
            Mv, dkba, dkbb, dA = warpgroup_mma_wait(num_outstanding=0, deps=(Mv, dkba, dkbb, dA))
            if iv + NSLOT < NV:  # this slot's next V block
                mbarrier.expect(bar.index(1 + sl), NBV)
                _load_state(ha_desc, hb_desc, hrow, (iv + NSLOT) * BV, bar.index(1 + sl), ha_s.index(sl),
                            hb_s.index(sl), W1, W2)
                _tma_load(v_desc, [t0, i_hv * V + (iv + NSLOT) * BV], bar.index(1 + sl), v_s.index(sl))
                _tma_load(d_desc, [t0, i_hv * V + (iv + NSLOT) * BV], bar.index(1 + sl), d_s.index(sl))
                _tma_load(dd_desc, [t0, i_hv * V + (iv + NSLOT) * BV], bar.index(1 + sl), dd_s.index(sl))

        # k k^T for A's gradient, on the tensor cores while the rest is worked out
        kk = warpgroup_mma(ka, ka.permute((1, 0)), gl.zeros([64, 64], gl.float32, m64), use_acc=False,
                           is_async=True)
        if W2 > 0:
            kk = warpgroup_mma(kb, kb.permute((1, 0)), kk, is_async=True)
        # dbeta from u = T (beta v): sum_i T_ij (d(delta) v^T)_ij, T's rows past the end zeroed
        T32 = gl.where(m_r[:, None], t_s.load(m64).to(gl.float32), 0.0)
        db = gl.convert_layout(gl.sum(T32 * Mv, 0), rows)
        egc = gl.exp(g_r)
        fb = b_r * egc
        # w = T (beta exp(gc) k): dk += dkb fb, with dkb = -(dvb h^T)
        ra = gl.arange(0, 64, layout=gl.SliceLayout(1, ma))
        ca = gl.arange(0, W1, layout=gl.SliceLayout(0, ma))
        ma_r = (bos + ra < eos)[:, None]
        rka = gl.convert_layout(rk_r, gl.SliceLayout(1, ma))
        kna = ka.load(ma).to(gl.float32) * rka[:, None]  # k / ||k||: read again for the L2 backward (registers)
        dka = gl.load(dkp + ((bos + ra) * HV + i_hv)[:, None] * K + ca[None, :], mask=ma_r, other=0.0).to(gl.float32)
        dka -= dkba * gl.convert_layout(fb, gl.SliceLayout(1, ma))[:, None]
        if W2 > 0:
            rb = gl.arange(0, 64, layout=gl.SliceLayout(1, mb))
            cb = W1 + gl.arange(0, W2, layout=gl.SliceLayout(0, mb))
            mb_r = (bos + rb < eos)[:, None]
            rkb = gl.convert_layout(rk_r, gl.SliceLayout(1, mb))
            knb = kb.load(mb).to(gl.float32) * rkb[:, None]
            dkb = gl.load(dkp + ((bos + rb) * HV + i_hv)[:, None] * K + cb[None, :], mask=mb_r,
                          other=0.0).to(gl.float32)
            dkb -= dkbb * gl.convert_layout(fb, gl.SliceLayout(1, mb))[:, None]
        else:
            knb = kna
            dkb = dka
        t_kb = -_rows_sum(dkba, kna, dkbb, knb, W2, rows)
        db += t_kb * egc
        dgc = gl.load(dgp + (bos + r64) * HV + i_hv, mask=m_r, other=0.0) + t_kb * fb
        # A (strictly lower) = beta k k^T exp(gc_i - gc_j) / (||k_i|| ||k_j||), dA = -(dvb delta^T)
        m_s = (r64[:, None] > c64[None, :]) & m_r[:, None] & m_c[None, :]
        dAE = gl.where(m_s, -dA * gl.exp(gl.where(m_s, g_r[:, None] - g_c[None, :], 0.0)), 0.0)
        dAEb = dAE * b_r[:, None]
        # dk += (dAEb diag(1/||k||)) k + (diag(1/||k||) dAEb)^T k: one product from registers, one from shared memory
        A1 = (dAEb * rk_c[None, :]).to(DT)
        p_s.store((dAEb * rk_r[:, None]).to(DT))
        fence_async_shared()
        _cta_barrier()
        dka = warpgroup_mma(gl.convert_layout(A1, aopa), ka, dka, is_async=True)
        dka = warpgroup_mma(p_s.permute((1, 0)), ka, dka, is_async=True)
        if W2 > 0:
            dkb = warpgroup_mma(gl.convert_layout(A1, aopb), kb, dkb, is_async=True)
            dkb = warpgroup_mma(p_s.permute((1, 0)), kb, dkb, is_async=True)
        kk = warpgroup_mma_wait(num_outstanding=4 if W2 > 0 else 2, deps=(kk, ))
        KK = kk * rk_r[:, None] * rk_c[None, :]
        db += gl.sum(dAE * KK, 1)
        dAA = dAEb * KK
        dgc += gl.sum(dAA, 1) - gl.convert_layout(gl.sum(dAA, 0), rows)
        # g: gc = cumsum(g) within the chunk, so dg is the reverse cumulative sum of d(gc)
        dgc = gl.where(m_r, dgc, 0.0)
        dgc_c = gl.convert_layout(dgc, cols)
        b_dg = gl.sum(gl.where(c64[None, :] >= r64[:, None], dgc_c[None, :], 0.0), 1)
        gl.store(dg + (bos + r64) * HV + i_hv, b_dg.to(dg.dtype.element_ty), mask=m_r)
        gl.store(dbeta + (bos + r64) * HV + i_hv, db.to(dbeta.dtype.element_ty), mask=m_r)
        if W2 > 0:
            dka, dkb = warpgroup_mma_wait(num_outstanding=0, deps=(dka, dkb))
        else:
            dka = warpgroup_mma_wait(num_outstanding=0, deps=(dka, ))
            dkb = dka
        if L2:  # (dk - kn (dk . kn)) / ||k||
            kna = ka.load(ma).to(gl.float32) * rka[:, None]
            if W2 > 0:
                knb = kb.load(mb).to(gl.float32) * rkb[:, None]
            else:
                knb = kna
            s = _rows_sum(dka, kna, dkb, knb, W2, gl.SliceLayout(1, ma))
            dka = (dka - kna * s[:, None]) * rka[:, None]
            if W2 > 0:
                dkb = (dkb - knb * gl.convert_layout(s, gl.SliceLayout(1, mb))[:, None]) * rkb[:, None]
        _store_rows(dk, dka, bos, eos, i_h, i_hv, 0, W1, H, HV, K, GA, ma)
        if W2 > 0:
            _store_rows(dk, dkb, bos, eos, i_h, i_hv, W1, W2, H, HV, K, GA, mb)
        _drop_barriers(bar, 3)


def slots(K, bv=BV):
    """(h, v, delta, d(delta)) slots: two where k, T, the staging tile and two slots take at most 112 KB of shared
    memory (two programs an SM on an H100), else one. Olmo-Hybrid (K = 96): two, 100 KB; Qwen3-Next (K = 128): two,
    112 KB."""
    return 2 if (64 * K + 2 * 64 * 64 + 2 * (K + 3 * 64) * bv) * 2 <= 112 * 1024 else 1


def warps(K):
    """(warps, register cap): 4 warps (two programs an SM), as the Gluon `_bwd_dqk`. H100 (session 25, call 4), 8x4096,
    8 warps (one program an SM): Qwen3-Next 1.281-1.301 ms against 1.022-1.026 on 4."""
    return 4, None


def fits(qdt, K, V, hopper, enabled=True, rb=True, tw=1, same_dtypes=True) -> bool:
    """The rule of `usable`: the Gluon `_bwd_dqk`'s (`dqk_gluon.fits`, with CONFIG wy_gluon as enabled) and T stored as
    one operand (tw = 1: CONFIG bwd_split_t off)."""
    return tw == 1 and dqk_gluon.fits(qdt, K, V, hopper, enabled, rb, same_dtypes)


def usable(k, v, Ai, hbuf, vnew, dvnew, enabled=True, rb=True) -> bool:
    """Whether the Gluon kernel can take this backward's `_bwd_wy` (`fits`, on k's device)."""
    hopper, same = dqk_gluon.tiled(k, v, Ai, hbuf, vnew, dvnew)
    return fits(k.dtype, k.shape[-1], v.shape[-1], hopper, enabled, rb, Ai.shape[-1] // 64, same)


def args(k, v, Ai, hbuf, vnew, dvnew, l2=True, nslot=None):
    """`_wy_gl`'s descriptors (its first arguments, in order) and constexprs but GA and the warps."""
    H, K = k.shape[1:]
    HV, V = v.shape[1], v.shape[2]
    W1, W2 = og.key_blocks(K)
    descs = (og.k_descs(k, 64) + (og.token_desc(Ai, 64),) + og.state_descs(hbuf)
             + tuple(og.token_desc(x, 64) for x in (v, vnew, dvnew)))
    return descs, dict(H=H, HV=HV, K=K, V=V, W1=W1, W2=W2, BV=BV, NSLOT=nslot or slots(K), L2=l2,
                       DT=og._GL[k.dtype])


def run(k, v, gc, beta, Ai, hbuf, vnew, dvnew, dkp, dgp, dk, dv, dg, db, cinfo, rk, TT, grid, GA, l2=True,
        num_warps=None, maxnreg=None, nslot=None):
    """Launch `_wy_gl` on `chunk._bwd_wy`'s arguments (the same order, then its grid and GA). Warps, register cap and
    slots: `warps` and `slots`, unless given."""
    check_warps(num_warps, k.shape[-1])
    if num_warps is None:
        num_warps, maxnreg = warps(k.shape[-1])
    descs, consts = args(k, v, Ai, hbuf, vnew, dvnew, l2, nslot)
    launch(_wy_gl, grid, *descs, gc, beta, dkp, dgp, dk, dv, dg, db, cinfo, rk, TT, GA=GA, **consts,
           num_warps=num_warps, **({"maxnreg": maxnreg} if maxnreg else {}))
