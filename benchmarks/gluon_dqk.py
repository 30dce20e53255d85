"""Prototype for the next device session (session 24, written after the device time was spent; NOT RUN on a GPU):
the backward's `_bwd_dqk` in Gluon, built like the forward's Gluon output kernel (`hybrid_posttrain/kernels/gdn/
out_gluon.py`): every tile requested by TMA up front, key columns as exact blocks (64 + 0 / 16 / 32 / 64), h and dh of
a V block in two slots, warpgroup MMAs issued asynchronously. The package does not use it.

On a Hopper GPU: one forward and backward of `chunk` at a head shape, with `_bwd_dqk`'s launch arguments recorded;
then the Triton kernel and this one on those arguments, their dq / dk-part / d(gc)-part compared, both timed.

    python3 benchmarks/gluon_dqk.py [--shapes qwen,olmo] [--bt 8x4096]   # a Hopper GPU
    python3 benchmarks/gluon_dqk.py --offline [--shapes qwen,olmo]       # compile for sm_90, no GPU

What it computes, per (chunk, value head), as `chunk._bwd_dqk` (see there): dq (L2-norm backward included; added
atomically into the q/k head's rows where value heads are grouped), the dk part (delta dh^T decayed, plus the
intra-chunk term) and the d(gc) part.
"""

from __future__ import annotations

import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import gdn  # noqa: E402
from benchmarks.gluon_out import SHAPES, cli, cpu_buffers, sm90_resources, with_rule  # noqa: E402
from benchmarks.train_step import run_script  # noqa: E402
from hybrid_posttrain.kernels.gdn import out_gluon as og  # noqa: E402

gl = og.gl

if og.gluon is not None:
    from triton.experimental import gluon
    from triton.experimental.gluon.language.nvidia.hopper import (
        fence_async_shared,
        mbarrier,
        warpgroup_mma,
        warpgroup_mma_wait,
    )

    _tma_load = og._tma_load
    _rows_prog = og._rows_prog
    _key_tiles = og._key_tiles
    _state_tiles = og._state_tiles
    _load_state = og._load_state
    # the CTA-wide barrier's name: thread_barrier up to Triton 3.6, barrier in 3.9
    _cta_barrier = gl.barrier if hasattr(gl, "barrier") else gl.thread_barrier

    @gluon.jit
    def _dqk_gl(qa_desc, qb_desc, ka_desc, kb_desc, ha_desc, hb_desc, dha_desc, dhb_desc, d_desc, do_desc,
                gc, dq, dkp, dgp, cinfo, scale, rq_in, rk_in, TT,
                H: gl.constexpr, HV: gl.constexpr, K: gl.constexpr, V: gl.constexpr, W1: gl.constexpr,
                W2: gl.constexpr, BV: gl.constexpr, GA: gl.constexpr, num_warps: gl.constexpr):
        i_c, i_hv, i_h, bos, eos = _rows_prog(cinfo, 2, H, HV)
        NV: gl.constexpr = V // BV
        DT: gl.constexpr = gl.bfloat16
        t0 = bos.to(gl.int32)
        hrow = ((i_c.to(gl.int64) * HV + i_hv) * K).to(gl.int32)

        bar = gl.allocate_shared_memory(gl.int64, [3, 1], mbarrier.MBarrierLayout())
        for i in gl.static_range(3):
            mbarrier.init(bar.index(i), count=1)
        qa, qb, ka, kb = _key_tiles(qa_desc, qb_desc, ka_desc, kb_desc, bar.index(0), t0, i_h * K, 64, W1, W2, DT)
        ha_s, hb_s = _state_tiles(ha_desc, hb_desc, 2, W1, W2, BV, DT)
        dha_s, dhb_s = _state_tiles(dha_desc, dhb_desc, 2, W1, W2, BV, DT)
        d_s = gl.allocate_shared_memory(DT, [2, 64, BV], d_desc.layout)
        do_s = gl.allocate_shared_memory(DT, [2, 64, BV], do_desc.layout)
        p_s = gl.allocate_shared_memory(DT, [64, 64], ka_desc.layout)
        NBV: gl.constexpr = (2 * K + 2 * 64) * BV * 2  # h, dh, delta, do of a V block
        for j in gl.static_range(2):
            if j < NV:
                mbarrier.expect(bar.index(1 + j), NBV)
                _load_state(ha_desc, hb_desc, hrow, j * BV, bar.index(1 + j), ha_s.index(j), hb_s.index(j), W1, W2)
                _load_state(dha_desc, dhb_desc, hrow, j * BV, bar.index(1 + j), dha_s.index(j), dhb_s.index(j), W1, W2)
                _tma_load(d_desc, [t0, i_hv * V + j * BV], bar.index(1 + j), d_s.index(j))
                _tma_load(do_desc, [t0, i_hv * V + j * BV], bar.index(1 + j), do_s.index(j))

        WN: gl.constexpr = num_warps // 4
        ma: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, WN],
                                                     instr_shape=[16, W1 // WN, 16])
        mb: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, WN],
                                                     instr_shape=[16, (W2 if W2 > 0 else W1) // WN, 16])
        m64: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, WN],
                                                      instr_shape=[16, 64 // WN, 16])
        aop: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=ma, k_width=2)
        aopb: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=mb, k_width=2)
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
            sl = iv % 2
            mbarrier.wait(bar.index(1 + sl), phase=(iv // 2) % 2)
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
            if iv + 2 < NV:
                mbarrier.expect(bar.index(1 + sl), NBV)
                _load_state(ha_desc, hb_desc, hrow, (iv + 2) * BV, bar.index(1 + sl), ha_s.index(sl), hb_s.index(sl),
                            W1, W2)
                _load_state(dha_desc, dhb_desc, hrow, (iv + 2) * BV, bar.index(1 + sl), dha_s.index(sl),
                            dhb_s.index(sl), W1, W2)
                _tma_load(d_desc, [t0, i_hv * V + (iv + 2) * BV], bar.index(1 + sl), dv)
                _tma_load(do_desc, [t0, i_hv * V + (iv + 2) * BV], bar.index(1 + sl), dov)

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
        s_a = gl.sum(dqa * qna, 1)
        if W2 > 0:
            s_a += gl.convert_layout(gl.sum(dqb * qnb, 1), gl.SliceLayout(1, ma))
        dqa = (dqa - qna * s_a[:, None]) * rqa[:, None]
        ra = gl.arange(0, 64, layout=gl.SliceLayout(1, ma))
        ca = gl.arange(0, W1, layout=gl.SliceLayout(0, ma))
        ma_r = (bos + ra < eos)[:, None]
        if GA:
            gl.atomic_add(dq + ((bos + ra) * H + i_h)[:, None] * K + ca[None, :], dqa.to(DT), mask=ma_r, sem="relaxed")
        else:
            gl.store(dq + ((bos + ra) * HV + i_hv)[:, None] * K + ca[None, :], dqa.to(DT), mask=ma_r)
        gl.store(dkp + ((bos + ra) * HV + i_hv)[:, None] * K + ca[None, :], dka.to(DT), mask=ma_r)
        if W2 > 0:
            s_b = gl.convert_layout(s_a, gl.SliceLayout(1, mb))
            dqb = (dqb - qnb * s_b[:, None]) * rqb[:, None]
            rb = gl.arange(0, 64, layout=gl.SliceLayout(1, mb))
            cb = W1 + gl.arange(0, W2, layout=gl.SliceLayout(0, mb))
            mb_r = (bos + rb < eos)[:, None]
            if GA:
                gl.atomic_add(dq + ((bos + rb) * H + i_h)[:, None] * K + cb[None, :], dqb.to(DT), mask=mb_r,
                              sem="relaxed")
            else:
                gl.store(dq + ((bos + rb) * HV + i_hv)[:, None] * K + cb[None, :], dqb.to(DT), mask=mb_r)
            gl.store(dkp + ((bos + rb) * HV + i_hv)[:, None] * K + cb[None, :], dkb.to(DT), mask=mb_r)
        gl.store(dgp + (bos + r64) * HV + i_hv, dgc, mask=m_r)
        for i in gl.static_range(3):
            mbarrier.invalidate(bar.index(i))


def dqk_args(q, k, hbuf, dhbuf, vnew, do):
    """`_dqk_gl`'s descriptors (its first arguments, in order) and constexprs but GA and the warps."""
    TT, H, K = q.shape
    HV, V = vnew.shape[1], vnew.shape[2]
    W1, W2 = og.key_blocks(K)
    descs = (og.key_descs(q, k, 64) + og.state_descs(hbuf) + og.state_descs(dhbuf)
             + (og.token_desc(vnew, 64), og.token_desc(do, 64)))
    return descs, dict(H=H, HV=HV, K=K, V=V, W1=W1, W2=W2, BV=og.BV)


def offline(shapes, warps):
    """Compile `_dqk_gl` for sm_90 (no GPU) and print registers, stack and shared memory."""
    for sname in shapes:
        label, H, HV, K, V = SHAPES[sname]
        q, k, hbuf, vnew = cpu_buffers(H, HV, K, V, rows=64)
        descs, consts = dqk_args(q, k, hbuf, hbuf, vnew, vnew)
        for w in warps:
            nw, cap = with_rule(w, K)
            regs, stack, kb = sm90_resources(_dqk_gl, descs, dict(consts, GA=HV > H), {"gc", "rq_in", "rk_in", "dgp"},
                                             nw, cap)
            print(f"gluon_dqk offline {label} {nw} warps (cap {cap}): {regs} registers, {stack} B stack, {kb} KB shared")


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
    try:
        xs = [x.detach().requires_grad_(True) for x in (q, k, v, g, beta)]
        o, _ = chunk.chunk_gated_delta_rule(*xs, use_qk_l2norm_in_kernel=True)
        torch.autograd.grad(o, xs, do)
    finally:
        chunk._run = real
    grid, a, kw = seen[0]
    (q2, k2, gc, hbuf, dhbuf, vnew, do2, dq, dkp, dgp, ci, scale, rq, rk, TT) = a
    outs = [x.clone() for x in (dq, dkp, dgp)]

    def triton_dqk():
        dq.zero_()
        real(chunk._bwd_dqk, grid, q2, k2, gc, hbuf, dhbuf, vnew, do2, dq, dkp, dgp, ci, scale, rq, rk, TT, **kw)

    triton_dqk()
    want = [x.clone() for x in (dq, dkp, dgp)]
    t = [do_bench(triton_dqk, warmup=25, rep=100, return_mode="median") for _ in range(2)]
    print(f"gluon_dqk {label} {B}x{T} triton _bwd_dqk: {t[0]:.3f} / {t[1]:.3f} ms", flush=True)
    descs, consts = dqk_args(q2, k2, hbuf, dhbuf, vnew, do2)
    for w in warps:
        nw, cap = with_rule(w, K)

        def gluon_dqk(nw=nw, cap=cap):
            dq.zero_()
            _dqk_gl[grid](*descs, gc, dq, outs[1], outs[2], ci, scale, rq, rk, TT, GA=kw["GA"], num_warps=nw,
                          **consts, **({"maxnreg": cap} if cap else {}))

        try:
            gluon_dqk()
            torch.cuda.synchronize()
        except Exception as e:  # noqa: BLE001  (a prototype: report and go on)
            print(f"gluon_dqk {label} {B}x{T} gluon {nw} warps: ERROR {type(e).__name__}: {str(e)[:1500]}", flush=True)
            continue
        got = [dq.clone(), outs[1], outs[2]]
        errs = ", ".join(f"{n} {((x.float() - y.float()).norm() / y.float().norm()).item():.1e}"
                         for n, x, y in zip(("dq", "dkp", "dgp"), got, want))
        t = [do_bench(gluon_dqk, warmup=25, rep=100, return_mode="median") for _ in range(2)]
        print(f"gluon_dqk {label} {B}x{T} gluon {nw} warps: {t[0]:.3f} / {t[1]:.3f} ms; against triton's: {errs}",
              flush=True)


def main():
    shapes, bts, warps, off = cli("gluon_dqk.py", __doc__, "8x4096", "8,4")
    if off:
        return offline(shapes, warps)
    for sname in shapes:
        for bt in bts:
            compare(sname, bt, warps)


if __name__ == "__main__":
    run_script(main)  # a kernel knob the driver refuses (KernelEnvError): one line, exit 2
