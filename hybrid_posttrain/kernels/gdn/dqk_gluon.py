"""The backward's `_bwd_dqk` (dq, and the dk and d(gc) parts that `_bwd_wy` completes) in Gluon, for Hopper GPUs.

Built like the forward's Gluon output kernel (`out_gluon.py`): every tile of a program is requested by TMA at its
start (q and k of the chunk; h, dh, delta and do of the first one or two V blocks), the key columns are exact blocks
(96 as 64 + 32), and the products are warpgroup MMAs issued asynchronously. The Triton `_bwd_dqk` runs one program an
SM (8 warps at 250-255 registers) at 31% of the issue slots (Nsight Compute, benchmarks/NOTES_gdn.md session 23);
this one fits two programs an SM.

H100 (session 25, calls 1-3; the kernel alone on one backward's arguments, `benchmarks/gluon_bwd.py`): Olmo-Hybrid
8x4096 1.008-1.010 ms on 4 warps against the Triton kernel's 1.250-1.262, Qwen3-Next (one slot) 1.078-1.092 against
1.188-1.215, at 1x32768 1.081 against 1.195-1.204; outputs equal to the Triton kernel's but d(gc) (1.1e-7, relative).

Same inputs and outputs as `chunk._bwd_dqk` with RB. `usable` says where it runs; elsewhere, and on the CPU (the
Triton interpreter does not run Gluon), `chunk._bwd` launches `_bwd_dqk`.
"""

from __future__ import annotations

from hybrid_posttrain.kernels._launch import launch

from . import out_gluon as og
from .out_gluon import BV, gluon

if gluon is not None:
    from .out_gluon import (
        _aop,
        _barriers,
        _cta_barrier,
        _drop_barriers,
        _key_tiles,
        _load_state,
        _mma,
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
    def _rows_sum(xa, ya, xb, yb, W2: gl.constexpr, lay: gl.constexpr):
        """Row sums of xa * ya (+ xb * yb where W2 > 0) in the [64] row layout lay."""
        s = gl.convert_layout(gl.sum(xa * ya, 1), lay)
        if W2 > 0:
            s += gl.convert_layout(gl.sum(xb * yb, 1), lay)
        return s

    @gluon.jit
    def _store_rows(dk, x, bos, eos, i_h, i_hv, c0: gl.constexpr, W: gl.constexpr, H: gl.constexpr,
                  HV: gl.constexpr, K: gl.constexpr, GA: gl.constexpr, lay: gl.constexpr):
        """Columns [c0, c0 + W) of the chunk's rows of a [tokens, heads, K] gradient dk (dq, dk, or the dk part; x:
        [64, W] fp32, layout lay): added atomically into the q/k head's rows (GA: grouped value heads), else stored per
        value head."""
        r = gl.arange(0, 64, layout=gl.SliceLayout(1, lay))
        c = c0 + gl.arange(0, W, layout=gl.SliceLayout(0, lay))
        m = (bos + r < eos)[:, None]
        if GA:
            gl.atomic_add(dk + ((bos + r) * H + i_h)[:, None] * K + c[None, :], x.to(dk.dtype.element_ty), mask=m,
                          sem="relaxed")
        else:
            gl.store(dk + ((bos + r) * HV + i_hv)[:, None] * K + c[None, :], x.to(dk.dtype.element_ty), mask=m)

    @gluon.jit
    def _dqk_gl(qa_desc, qb_desc, ka_desc, kb_desc, ha_desc, hb_desc, dha_desc, dhb_desc, d_desc, do_desc,
                gc, dq, dkp, dgp, cinfo, scale, rq_in, rk_in, TT,
                H: gl.constexpr, HV: gl.constexpr, K: gl.constexpr, V: gl.constexpr, W1: gl.constexpr,
                W2: gl.constexpr, BV: gl.constexpr, NSLOT: gl.constexpr, L2: gl.constexpr, DT: gl.constexpr,
                GA: gl.constexpr, num_warps: gl.constexpr):
        """`chunk._bwd_dqk` with RB (see its docstring for the algebra): one program a (chunk, value head), the grid's
        axes as `chunk._chunk_head` reads them. Key columns as exact blocks of W1 and W2 (`out_gluon.key_blocks`); a V
        block's h, dh, delta and do ([W1 + W2, BV] and [64 tokens, BV] tiles) in NSLOT slots (`slots`). The four V-loop
        products are issued asynchronously, and the rows' sum of h * dh (for d(gL)) is read from shared memory while they
        run; the intra-chunk products run on the tensor cores from registers (dq) and shared memory (dk)."""
        i_c, i_hv, i_h, bos, eos = _rows_prog(cinfo, 2, H, HV)
        NV: gl.constexpr = V // BV
        t0 = bos.to(gl.int32)
        hrow = ((i_c.to(gl.int64) * HV + i_hv) * K).to(gl.int32)

        bar = _barriers(3)
        qa, qb, ka, kb = _key_tiles(qa_desc, qb_desc, ka_desc, kb_desc, bar.index(0), t0, i_h * K, 64, W1, W2, DT)
        ha_s, hb_s = _state_tiles(ha_desc, hb_desc, NSLOT, W1, W2, BV, DT)
        dha_s, dhb_s = _state_tiles(dha_desc, dhb_desc, NSLOT, W1, W2, BV, DT)
        d_s = gl.allocate_shared_memory(DT, [NSLOT, 64, BV], d_desc.layout)
        do_s = gl.allocate_shared_memory(DT, [NSLOT, 64, BV], do_desc.layout)
        p_s = gl.allocate_shared_memory(DT, [64, 64], ka_desc.layout)
        NBV: gl.constexpr = (2 * K + 2 * 64) * BV * 2  # h, dh, delta, do of a V block
        for j in gl.static_range(NSLOT):
            if j < NV:
                mbarrier.expect(bar.index(1 + j), NBV)
                _load_state(ha_desc, hb_desc, hrow, j * BV, bar.index(1 + j), ha_s.index(j), hb_s.index(j), W1, W2)
                _load_state(dha_desc, dhb_desc, hrow, j * BV, bar.index(1 + j), dha_s.index(j), dhb_s.index(j), W1, W2)
                _tma_load(d_desc, [t0, i_hv * V + j * BV], bar.index(1 + j), d_s.index(j))
                _tma_load(do_desc, [t0, i_hv * V + j * BV], bar.index(1 + j), do_s.index(j))

        ma: gl.constexpr = _mma(num_warps, W1)
        mb: gl.constexpr = _mma(num_warps, W2 if W2 > 0 else W1)
        m64: gl.constexpr = _mma(num_warps, 64)
        aop: gl.constexpr = _aop(ma)
        aopb: gl.constexpr = _aop(mb)
        blk: gl.constexpr = gl.BlockedLayout([1, 8], [4, 8], [num_warps, 1], [1, 0])

        # per-token values while the tiles fly
        r64 = gl.arange(0, 64, layout=gl.SliceLayout(1, m64))
        c64 = gl.arange(0, 64, layout=gl.SliceLayout(0, m64))
        m_r = bos + r64 < eos
        m_c = bos + c64 < eos
        g_r = gl.load(gc + (bos + r64) * HV + i_hv, mask=m_r, other=0.0)
        g_c = gl.load(gc + (bos + c64) * HV + i_hv, mask=m_c, other=0.0)
        rq_r = gl.load(rq_in + i_hv.to(gl.int64) * TT + bos + r64, mask=m_r, other=0.0)
        rk_r = gl.load(rk_in + i_hv.to(gl.int64) * TT + bos + r64, mask=m_r, other=0.0)
        rk_c = gl.load(rk_in + i_hv.to(gl.int64) * TT + bos + c64, mask=m_c, other=0.0)
        last = gl.minimum(bos + 64, eos) - 1
        gL = gl.load(gc + last * HV + i_hv)

        dqa = gl.zeros([64, W1], gl.float32, ma)
        dka = gl.zeros([64, W1], gl.float32, ma)
        dqb = gl.zeros([64, W2 if W2 > 0 else W1], gl.float32, mb)
        dkb = gl.zeros([64, W2 if W2 > 0 else W1], gl.float32, mb)
        M = gl.zeros([64, 64], gl.float32, m64)
        hdh = 0.0  # sum of h * dh over the state
        for iv in gl.static_range(NV):
            sl = iv % NSLOT
            mbarrier.wait(bar.index(1 + sl), phase=(iv // NSLOT) % 2)
            dov = do_s.index(sl)
            dv = d_s.index(sl)
            # dq_h += do h^T, dk_h += delta dh^T, M += do delta^T
            dqa = warpgroup_mma(dov, ha_s.index(sl).permute((1, 0)), dqa, is_async=True)
            dka = warpgroup_mma(dv, dha_s.index(sl).permute((1, 0)), dka, is_async=True)
            if W2 > 0:
                dqb = warpgroup_mma(dov, hb_s.index(sl).permute((1, 0)), dqb, is_async=True)
                dkb = warpgroup_mma(dv, dhb_s.index(sl).permute((1, 0)), dkb, is_async=True)
            M = warpgroup_mma(dov, dv.permute((1, 0)), M, is_async=True)
            # d(gL) needs sum(h * dh): from shared memory while the products run
            hf = ha_s.index(sl).load(blk).to(gl.float32)
            hdh += gl.sum(gl.sum(hf * dha_s.index(sl).load(blk).to(gl.float32), 1), 0)
            if W2 > 0:
                hf = hb_s.index(sl).load(blk).to(gl.float32)
                hdh += gl.sum(gl.sum(hf * dhb_s.index(sl).load(blk).to(gl.float32), 1), 0)
            dqa, dka, dqb, dkb, M = warpgroup_mma_wait(num_outstanding=0, deps=(dqa, dka, dqb, dkb, M))
            if iv + NSLOT < NV:  # this slot's next V block
                mbarrier.expect(bar.index(1 + sl), NBV)
                _load_state(ha_desc, hb_desc, hrow, (iv + NSLOT) * BV, bar.index(1 + sl), ha_s.index(sl), hb_s.index(sl),
                            W1, W2)
                _load_state(dha_desc, dhb_desc, hrow, (iv + NSLOT) * BV, bar.index(1 + sl), dha_s.index(sl),
                            dhb_s.index(sl), W1, W2)
                _tma_load(d_desc, [t0, i_hv * V + (iv + NSLOT) * BV], bar.index(1 + sl), dv)
                _tma_load(do_desc, [t0, i_hv * V + (iv + NSLOT) * BV], bar.index(1 + sl), dov)

        mbarrier.wait(bar.index(0), phase=0)
        # intra-chunk term: MD = M * decay (i >= j) * scale, QK = q k^T / (||q_i|| ||k_j||), P = MD * QK
        qk = warpgroup_mma(qa, ka.permute((1, 0)), gl.zeros([64, 64], gl.float32, m64), use_acc=False, is_async=True)
        if W2 > 0:
            qk = warpgroup_mma(qb, kb.permute((1, 0)), qk, is_async=True)
        qk = warpgroup_mma_wait(num_outstanding=0, deps=(qk, ))
        mc = (r64[:, None] >= c64[None, :]) & m_r[:, None] & m_c[None, :]
        MD = M * gl.exp(gl.where(mc, g_r[:, None] - g_c[None, :], float("-inf"))) * scale
        P = MD * qk * rq_r[:, None] * rk_c[None, :]
        dgc = gl.sum(P, 1) - gl.convert_layout(gl.sum(P, 0), gl.SliceLayout(1, m64))
        # b_dq += (MD diag(1/||k||)) k ; b_dk = (diag(1/||q||) MD)^T q
        A1 = (MD * rk_c[None, :]).to(DT)
        p_s.store((MD * rq_r[:, None]).to(DT))
        egc = gl.exp(g_r)
        fdq = scale * egc
        fdk = gl.where(m_r, gl.exp(gL - g_r), 0.0)
        dqa = dqa * gl.convert_layout(fdq, gl.SliceLayout(1, ma))[:, None]
        dka = dka * gl.convert_layout(fdk, gl.SliceLayout(1, ma))[:, None]
        if W2 > 0:
            dqb = dqb * gl.convert_layout(fdq, gl.SliceLayout(1, mb))[:, None]
            dkb = dkb * gl.convert_layout(fdk, gl.SliceLayout(1, mb))[:, None]
        # the inter-chunk parts' d(gc) terms need q / k normalised, in the accumulators' layouts
        rqa = gl.convert_layout(rq_r, gl.SliceLayout(1, ma))
        rka = gl.convert_layout(rk_r, gl.SliceLayout(1, ma))
        qna = qa.load(ma).to(gl.float32) * rqa[:, None]
        kna = ka.load(ma).to(gl.float32) * rka[:, None]
        dgc += gl.convert_layout(gl.sum(dqa * qna, 1), gl.SliceLayout(1, m64))
        t_kh = gl.convert_layout(gl.sum(dka * kna, 1), gl.SliceLayout(1, m64))
        if W2 > 0:
            rqb = gl.convert_layout(rq_r, gl.SliceLayout(1, mb))
            rkb = gl.convert_layout(rk_r, gl.SliceLayout(1, mb))
            qnb = qb.load(mb).to(gl.float32) * rqb[:, None]
            knb = kb.load(mb).to(gl.float32) * rkb[:, None]
            dgc += gl.convert_layout(gl.sum(dqb * qnb, 1), gl.SliceLayout(1, m64))
            t_kh += gl.convert_layout(gl.sum(dkb * knb, 1), gl.SliceLayout(1, m64))
        else:
            qnb = qna
        dgc -= t_kh
        dgL = gl.sum(t_kh, 0) + gl.exp(gL) * hdh
        dgc += gl.where(bos + r64 == last, dgL, 0.0)
        # the intra-chunk products onto dq / dk (A1 from registers, p_s^T from shared memory: its generic-proxy store
        # fenced before the warpgroup MMA reads it through the async proxy)
        fence_async_shared()
        _cta_barrier()
        dqa = warpgroup_mma(gl.convert_layout(A1, aop), ka, dqa, is_async=True)
        dka = warpgroup_mma(p_s.permute((1, 0)), qa, dka, is_async=True)
        if W2 > 0:
            dqb = warpgroup_mma(gl.convert_layout(A1, aopb), kb, dqb, is_async=True)
            dkb = warpgroup_mma(p_s.permute((1, 0)), qb, dkb, is_async=True)
        dqa, dka, dqb, dkb = warpgroup_mma_wait(num_outstanding=0, deps=(dqa, dka, dqb, dkb))
        # L2-norm backward of dq: (dq - qn (dq . qn)) / ||q||
        if L2:
            s_a = _rows_sum(dqa, qna, dqb, qnb, W2, gl.SliceLayout(1, ma))
            dqa = (dqa - qna * s_a[:, None]) * rqa[:, None]
            if W2 > 0:
                dqb = (dqb - qnb * gl.convert_layout(s_a, gl.SliceLayout(1, mb))[:, None]) * rqb[:, None]
        _store_rows(dq, dqa, bos, eos, i_h, i_hv, 0, W1, H, HV, K, GA, ma)
        _store_rows(dkp, dka, bos, eos, i_h, i_hv, 0, W1, H, HV, K, False, ma)
        if W2 > 0:
            _store_rows(dq, dqb, bos, eos, i_h, i_hv, W1, W2, H, HV, K, GA, mb)
            _store_rows(dkp, dkb, bos, eos, i_h, i_hv, W1, W2, H, HV, K, False, mb)
        gl.store(dgp + (bos + r64) * HV + i_hv, dgc, mask=m_r)
        _drop_barriers(bar, 3)




def slots(K, bv=BV):
    """(h, dh, delta, do) slots: two where q, k, two slots and the [64, 64] staging tile take at most 112 KB of shared
    memory (two programs an SM on an H100), else one. Olmo-Hybrid (K = 96, three V blocks): two, 112 KB; Qwen3-Next
    (K = 128): one, 88 KB (two: 136 KB, one program an SM). bv: the value block (64; two slots of 32 at Qwen3-Next were
    slower, 1.080 -> 1.108 ms at 8x4096, session 25, call 9)."""
    return 2 if (2 * 64 * K + 2 * (2 * K + 128) * bv + 64 * 64) * 2 <= 112 * 1024 else 1


def warps(K):
    """(warps, register cap): 4 warps (two programs an SM: 8 warps at 182-205 registers leave room for one).
    H100 (session 25, calls 1-2), 8x4096: Olmo-Hybrid 1.010 ms on 4 warps, 1.366 on 8; Qwen3-Next 1.079 on 4 warps
    with one slot, 1.472 with two (136 KB: one program an SM), 1.612 on 8 warps capped at 128 registers."""
    return 4, None


def check_warps(num_warps, K):
    """Refuse 8 warps where a key block of 16 or 32 columns would be split over two warpgroups (blocks of 8 or 16 a
    warpgroup): H100 (session 25, calls 2 and 4), Olmo-Hybrid (64 + 32) on 8 warps gave wrong outputs in both backward
    Gluon kernels (this one's dk part 2.3e-2 off the Triton kernel's, `wy_gluon`'s dbeta 8.0e-2), where 4 warps and
    Qwen3-Next (64 + 64) on 8 agreed to 2e-5. The rules (`warps`) take 4."""
    w2 = og.key_blocks(K)[1]
    if num_warps == 8 and w2 not in (0, 64):
        raise ValueError(f"the backward's Gluon kernels on 8 warps give wrong outputs at key dim {K} (a block of {w2} "
                         "columns over two warpgroups); 4 warps run it")


def fits(qdt, K, V, hopper, enabled=True, rb=True, same_dtypes=True) -> bool:
    """The rule of `usable` (and with T as one operand, of `wy_gluon.usable`): CONFIG dqk_gluon on (enabled), Gluon
    imported, a Hopper GPU, half precision with every tiled tensor of one dtype (same_dtypes), the row norms read from
    the forward's buffers (rb: CONFIG bchunk_norms), a key dim `out_gluon.key_blocks` takes, a value dim in whole
    64-column blocks."""
    return (enabled and rb and same_dtypes and gluon is not None and hopper and qdt in og._GL
            and og.key_blocks(K) is not None and V % BV == 0)


def tiled(*xs) -> tuple[bool, bool]:
    """(on a Hopper GPU, every one of xs contiguous, 16-byte aligned (TMA) and of the first one's dtype)."""
    hopper = xs[0].device.type == "cuda" and og._hopper(str(xs[0].device))
    return hopper, all(x.dtype == xs[0].dtype and x.data_ptr() % 16 == 0 and x.is_contiguous() for x in xs)


def usable(q, k, hbuf, dhbuf, vnew, do, enabled=True, rb=True) -> bool:
    """Whether the Gluon kernel can take this backward's `_bwd_dqk` (`fits`, on q's device)."""
    hopper, same = tiled(q, k, hbuf, dhbuf, vnew, do)
    return fits(q.dtype, q.shape[-1], vnew.shape[-1], hopper, enabled, rb, same)


def args(q, k, hbuf, dhbuf, vnew, do, l2=True, nslot=None, bv=BV):
    """`_dqk_gl`'s descriptors (its first arguments, in order) and constexprs but GA and the warps."""
    TT, H, K = q.shape
    HV, V = vnew.shape[1], vnew.shape[2]
    W1, W2 = og.key_blocks(K)
    descs = (og.key_descs(q, k, 64) + og.state_descs(hbuf, bv) + og.state_descs(dhbuf, bv)
             + (og.token_desc(vnew, 64, bv), og.token_desc(do, 64, bv)))
    return descs, dict(H=H, HV=HV, K=K, V=V, W1=W1, W2=W2, BV=bv, NSLOT=nslot or slots(K, bv), L2=l2,
                       DT=og._GL[q.dtype])


def run(q, k, gc, hbuf, dhbuf, vnew, do, dq, dkp, dgp, cinfo, scale, rq, rk, TT, grid, GA, l2=True, num_warps=None,
        maxnreg=None, nslot=None, bv=BV):
    """Launch `_dqk_gl` on `chunk._bwd_dqk`'s arguments (the same order, then its grid and GA). Warps, register cap
    and slots: `warps` and `slots`, unless given."""
    check_warps(num_warps, q.shape[-1])
    if num_warps is None:
        num_warps, maxnreg = warps(q.shape[-1])
    descs, consts = args(q, k, hbuf, dhbuf, vnew, do, l2, nslot, bv)
    launch(_dqk_gl, grid, *descs, gc, dq, dkp, dgp, cinfo, scale, rq, rk, TT, GA=GA, **consts, num_warps=num_warps,
           **({"maxnreg": maxnreg} if maxnreg else {}))
