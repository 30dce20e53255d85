"""The forward's output kernel over pairs of chunks (`chunk._fwd_out` with S = 2) in Gluon, for Hopper GPUs.

Gluon is Triton's lower-level language: shared memory, TMA copies and warpgroup MMAs are explicit. The Triton
`_fwd_out` waits on global loads at two programs an SM (Nsight Compute, benchmarks/NOTES_gdn.md session 23): its
software pipeline requests a V block's h and delta only once the q k^T product is done, and its 255 registers leave
no room for more programs. Here every program requests all of its first tiles by TMA at its start (q and k of the
pair, h and delta of the first V block), loads its per-token values meanwhile, and builds q k^T as three [64, 64]
pieces (the first chunk's rows see only its own keys), each turned into the bf16 operand of the output's product
before the next is read, so that no [128, 128] fp32 tile is ever held. The output's row halves take one accumulator
each: f (q h), scaled in registers, then A delta accumulated onto it. H100 (session 24), Qwen3-Next 8x4096: 0.437 ms
against the Triton kernel's 0.504, the same output to 6e-6.

Same inputs and outputs as `_fwd_out` (o, and 1/||q|| to rq for the backward); `usable` says where it runs (`chunk._fwd`
falls back to `_fwd_out` elsewhere, and on the CPU, where the interpreter does not run Gluon). Key rows shorter
than their 128-column block (Olmo-Hybrid's 96) come zero-filled from 3-d TMA descriptors, as do a state's rows past K.

Gluon is experimental and its API moves between Triton releases: anything it cannot import or compile leaves the
Triton kernel in place (`usable`, `run`).
"""

from __future__ import annotations

import functools

import torch

try:
    from triton.experimental import gluon
    from triton.experimental.gluon import language as gl
    from triton.experimental.gluon.language.nvidia.hopper import (
        mbarrier,
        tma,
        warpgroup_mma,
        warpgroup_mma_wait,
    )
    from triton.experimental.gluon.nvidia.hopper import TensorDescriptor
except Exception as e:  # noqa: BLE001  (any failure: the Triton kernel runs instead)
    gluon = None
    IMPORT_ERROR = f"{type(e).__name__}: {e}"
else:
    IMPORT_ERROR = None

BV = 64  # value block of the kernel (V a multiple of it)
_GL = {}  # torch dtype -> Gluon dtype (filled below where Gluon imports)

if gluon is not None:
    _GL = {torch.bfloat16: gl.bfloat16, torch.float16: gl.float16}
    # the TMA load's name: async_copy_global_to_shared up to Triton 3.6 (the GPU image), async_load from 3.7 on
    _tma_load = tma.async_load if hasattr(tma, "async_load") else tma.async_copy_global_to_shared

    @gluon.jit
    def _piece(acc, g_r, g_c, f_r, f_c, t_r, t_c, eos, CAUSAL: gl.constexpr, DT: gl.constexpr, aop: gl.constexpr):
        """One [64, 64] piece of the pair's decayed q k^T (raw products acc; t_r / t_c: the rows' and columns' tokens)
        as the A operand (dtype DT) of the output's product: f_r (scale / ||q||) and f_c (1 / ||k||) on its rows and
        columns, exp(g_i - g_j) where both tokens are the group's (and i >= j on the diagonal pieces), else zero."""
        m = (t_r < eos)[:, None] & (t_c < eos)[None, :]
        if CAUSAL:
            m = m & (t_r[:, None] >= t_c[None, :])
        a = acc * gl.exp(gl.where(m, g_r[:, None] - g_c[None, :], float("-inf")))
        return gl.convert_layout((a * f_r[:, None] * f_c[None, :]).to(DT), aop)

    @gluon.jit
    def _out_gl(q_desc, k_desc, h_desc, d_desc, gc, rk, rq_out, o, ginfo, scale, TT,
                H: gl.constexpr, HV: gl.constexpr, K: gl.constexpr, V: gl.constexpr, NK: gl.constexpr,
                BV: gl.constexpr, HS: gl.constexpr, DT: gl.constexpr, num_warps: gl.constexpr):
        """`chunk._fwd_out` for S = 2 (see its docstring for the algebra): one program a (group of two chunks, value
        head); the grid's axes as `chunk._chunk_head` reads them. Every tile is [128, 64] (64 columns: 128 bytes a
        row, the widest swizzle): q and k of the pair as NK column blocks, h of a V block as [128 key rows, 64], delta
        as [128 tokens, 64]. Two slots of (h, delta) tiles; the second is k's, free once q k^T is built."""
        if gl.num_programs(1) == HV:
            i_g = gl.program_id(0)
            i_hv = gl.program_id(1)
        else:
            i_g = gl.program_id(1)
            i_hv = gl.program_id(0)
        i_h = i_hv // (HV // H)
        bos = gl.load(ginfo + 4 * i_g).to(gl.int64)
        eos = gl.load(ginfo + 4 * i_g + 1).to(gl.int64)
        hidx = gl.load(ginfo + 4 * i_g + (2 if HS == 1 else 3)).to(gl.int64)
        NV: gl.constexpr = V // BV
        t0 = bos.to(gl.int32)
        hrow = ((hidx * HV + i_hv) * K).to(gl.int32)

        # q's blocks come from a 3-d box ([128, 1, 64] of [tokens, H, K]) so that columns past K are zeros; k's and
        # h's past K (the next head's, or zeros at the end) then meet only those zeros
        q3 = gl.allocate_shared_memory(DT, [NK, 128, 1, 64], q_desc.layout)
        t = gl.allocate_shared_memory(DT, [2 + NK, 128, 64], k_desc.layout)  # slot 0 (h, delta), then k's blocks
        bar = gl.allocate_shared_memory(gl.int64, [3, 1], mbarrier.MBarrierLayout())
        for i in gl.static_range(3):
            mbarrier.init(bar.index(i), count=1)
        mbarrier.expect(bar.index(0), NK * (q_desc.block_type.nbytes + k_desc.block_type.nbytes))
        for j in gl.static_range(NK):
            _tma_load(q_desc, [t0, i_h, j * 64], bar.index(0), q3.index(j))
            _tma_load(k_desc, [t0, i_h * K + j * 64], bar.index(0), t.index(2 + j))
        mbarrier.expect(bar.index(1), h_desc.block_type.nbytes + d_desc.block_type.nbytes)
        _tma_load(h_desc, [hrow, 0], bar.index(1), t.index(0))
        _tma_load(d_desc, [t0, i_hv * V], bar.index(1), t.index(1))

        # layouts: every accumulator has 64 rows ([64, 64] pieces of q k^T, [64, BV] outputs); with 8 warps two
        # warpgroups take half of each one's columns
        WN: gl.constexpr = num_warps // 4
        m64: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, WN],
                                                      instr_shape=[16, 64 // WN, 16])
        mo: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, WN],
                                                     instr_shape=[16, BV // WN, 16])
        aop: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=mo, k_width=2)
        blk: gl.constexpr = gl.BlockedLayout([1, 8], [4, 8], [num_warps, 1], [1, 0])

        # per-token values while the tiles are in flight. g is continued across the pair: the second chunk's rows
        # add the first chunk's last cumulative g (gc is chunk-local)
        g_last = gl.load(gc + (bos + 63) * HV + i_hv, mask=bos + 63 < eos, other=0.0)
        r64 = gl.arange(0, 64, layout=gl.SliceLayout(1, m64))
        c64 = gl.arange(0, 64, layout=gl.SliceLayout(0, m64))
        g_r0 = gl.load(gc + (bos + r64) * HV + i_hv, mask=bos + r64 < eos, other=0.0)
        g_r1 = gl.load(gc + (bos + 64 + r64) * HV + i_hv, mask=bos + 64 + r64 < eos, other=0.0) + g_last
        g_c0 = gl.load(gc + (bos + c64) * HV + i_hv, mask=bos + c64 < eos, other=0.0)
        g_c1 = gl.load(gc + (bos + 64 + c64) * HV + i_hv, mask=bos + 64 + c64 < eos, other=0.0) + g_last
        rk_c0 = gl.load(rk + i_hv.to(gl.int64) * TT + bos + c64, mask=bos + c64 < eos, other=0.0)
        rk_c1 = gl.load(rk + i_hv.to(gl.int64) * TT + bos + 64 + c64, mask=bos + 64 + c64 < eos, other=0.0)

        mbarrier.wait(bar.index(0), phase=0)
        zq = gl.zeros([64, 64], gl.float32, m64)
        # s_rc: rows of chunk r against keys of chunk c, over the NK column blocks
        s00 = zq
        for j in gl.static_range(NK):
            qj = q3.index(j).reshape([128, 64])
            s00 = warpgroup_mma(qj.slice(0, 64), t.index(2 + j).slice(0, 64).permute((1, 0)), s00, use_acc=j > 0,
                                is_async=True)
        # the rows' 1/||q|| from shared memory while the first piece runs on the tensor cores
        rtb = gl.arange(0, 64, layout=gl.SliceLayout(1, blk))
        ss0 = gl.zeros([64], gl.float32, gl.SliceLayout(1, blk))
        ss1 = gl.zeros([64], gl.float32, gl.SliceLayout(1, blk))
        for j in gl.static_range(NK):
            qj = q3.index(j).reshape([128, 64])
            qf = qj.slice(0, 64).load(blk).to(gl.float32)
            ss0 += gl.sum(qf * qf, 1)
            qf = qj.slice(64, 64).load(blk).to(gl.float32)
            ss1 += gl.sum(qf * qf, 1)
        rq0 = gl.rsqrt(ss0 + 1e-6)
        rq1 = gl.rsqrt(ss1 + 1e-6)
        gl.store(rq_out + i_hv.to(gl.int64) * TT + bos + rtb, rq0, mask=bos + rtb < eos)
        gl.store(rq_out + i_hv.to(gl.int64) * TT + bos + 64 + rtb, rq1, mask=bos + 64 + rtb < eos)
        rq_r0 = gl.convert_layout(rq0, gl.SliceLayout(1, m64)) * scale
        rq_r1 = gl.convert_layout(rq1, gl.SliceLayout(1, m64)) * scale
        s10 = zq
        for j in gl.static_range(NK):
            qj = q3.index(j).reshape([128, 64])
            s10 = warpgroup_mma(qj.slice(64, 64), t.index(2 + j).slice(0, 64).permute((1, 0)), s10, use_acc=j > 0,
                                is_async=True)
        s00 = warpgroup_mma_wait(num_outstanding=NK, deps=(s00, ))
        A00 = _piece(s00, g_r0, g_c0, rq_r0, rk_c0, bos + r64, bos + c64, eos, True, DT, aop)
        s11 = zq
        for j in gl.static_range(NK):
            qj = q3.index(j).reshape([128, 64])
            s11 = warpgroup_mma(qj.slice(64, 64), t.index(2 + j).slice(64, 64).permute((1, 0)), s11, use_acc=j > 0,
                                is_async=True)
        s10 = warpgroup_mma_wait(num_outstanding=NK, deps=(s10, ))
        A10 = _piece(s10, g_r1, g_c0, rq_r1, rk_c0, bos + 64 + r64, bos + c64, eos, False, DT, aop)
        s11 = warpgroup_mma_wait(num_outstanding=0, deps=(s11, ))
        A11 = _piece(s11, g_r1, g_c1, rq_r1, rk_c1, bos + 64 + r64, bos + 64 + c64, eos, True, DT, aop)
        if NV > 1:  # k's tiles are free: the second V block's h and delta into them (slot 1)
            mbarrier.expect(bar.index(2), h_desc.block_type.nbytes + d_desc.block_type.nbytes)
            _tma_load(h_desc, [hrow, BV], bar.index(2), t.index(2))
            _tma_load(d_desc, [t0, i_hv * V + BV], bar.index(2), t.index(3))

        ro = gl.arange(0, 64, layout=gl.SliceLayout(1, mo))
        co = gl.arange(0, BV, layout=gl.SliceLayout(0, mo))
        f0 = gl.convert_layout(rq_r0 * gl.exp(g_r0), gl.SliceLayout(1, mo))
        f1 = gl.convert_layout(rq_r1 * gl.exp(g_r1), gl.SliceLayout(1, mo))
        m_o0 = (bos + ro < eos)[:, None]
        m_o1 = (bos + 64 + ro < eos)[:, None]
        zero = gl.zeros([64, BV], gl.float32, mo)
        for iv in gl.static_range(NV):
            sl = iv % 2
            mbarrier.wait(bar.index(1 + sl), phase=(iv // 2) % 2)
            h_s = t.index(2 * sl)
            d_s = t.index(2 * sl + 1)
            o0 = zero
            o1 = zero
            for j in gl.static_range(NK):
                qj = q3.index(j).reshape([128, 64])
                o0 = warpgroup_mma(qj.slice(0, 64), h_s.slice(64 * j, 64), o0, use_acc=j > 0, is_async=True)
                o1 = warpgroup_mma(qj.slice(64, 64), h_s.slice(64 * j, 64), o1, use_acc=j > 0, is_async=True)
            o0, o1 = warpgroup_mma_wait(num_outstanding=0, deps=(o0, o1))
            o0 = warpgroup_mma(A00, d_s.slice(0, 64), o0 * f0[:, None], is_async=True)
            o1 = warpgroup_mma(A10, d_s.slice(0, 64), o1 * f1[:, None], is_async=True)
            o1 = warpgroup_mma(A11, d_s.slice(64, 64), o1, is_async=True)
            o0, o1 = warpgroup_mma_wait(num_outstanding=0, deps=(o0, o1))
            if iv + 2 < NV:  # this slot's next V block, while this one's output is stored
                mbarrier.expect(bar.index(1 + sl), h_desc.block_type.nbytes + d_desc.block_type.nbytes)
                _tma_load(h_desc, [hrow, (iv + 2) * BV], bar.index(1 + sl), h_s)
                _tma_load(d_desc, [t0, i_hv * V + (iv + 2) * BV], bar.index(1 + sl), d_s)
            off = ((bos + ro) * HV + i_hv)[:, None] * V + (iv * BV + co)[None, :]
            gl.store(o + off, o0.to(o.dtype.element_ty), mask=m_o0)
            gl.store(o + off + 64 * HV * V, o1.to(o.dtype.element_ty), mask=m_o1)
        for i in gl.static_range(3):
            mbarrier.invalidate(bar.index(i))


@functools.lru_cache(maxsize=8)
def _hopper(device: str) -> bool:
    return torch.cuda.get_device_capability(device)[0] == 9


def usable(q: torch.Tensor, v: torch.Tensor, S: int, BK: int, enabled: bool = True) -> bool:
    """Whether the Gluon kernel can take this forward's output (`fits`, on q's device)."""
    hopper = q.device.type == "cuda" and _hopper(str(q.device))
    return fits(q.dtype, v.dtype, q.shape[-1], v.shape[-1], S, BK, hopper, enabled)


def fits(qdt, vdt, K, V, S, BK, hopper, enabled=True) -> bool:
    """The rule of `usable`: CONFIG out_gluon on (enabled), Gluon imported, a Hopper GPU (sm_90: TMA and warpgroup
    MMAs as written), half-precision q, k and v of one dtype, pairs of chunks (S = 2), a key block of 64 or 128, a
    value dim in whole 64-column blocks, key rows the TMA can address (16-byte aligned)."""
    return (enabled and gluon is not None and hopper and qdt in _GL and vdt == qdt and S == 2 and BK in (64, 128)
            and V % BV == 0 and (K * 2) % 16 == 0)


def run(q, k, gc, rk, rq, hbuf, vnew, o, ginfo, NG, scale, HS, BK, grid, num_warps=4, maxnreg=None):
    """Launch `_out_gl` on the `_fwd_out` arguments (q, k: [tokens, H, K]; hbuf: [states, HV, K, V]; vnew, o:
    [tokens, HV, V]; ginfo: the groups' rows, NG of them; grid as `chunk._chunk_grid`; BK the key block, 64 or 128)."""
    TT, H, K = q.shape
    HV, V = vnew.shape[1], vnew.shape[2]
    lay2 = gl.NVMMASharedLayout(swizzle_byte_width=128, element_bitwidth=16, rank=2)
    lay3 = gl.NVMMASharedLayout(swizzle_byte_width=128, element_bitwidth=16, rank=3)
    q_desc = TensorDescriptor(q, [TT, H, K], [H * K, K, 1], [128, 1, 64], lay3)
    k_desc = TensorDescriptor(k, [TT, H * K], [H * K, 1], [128, 64], lay2)
    h_desc = TensorDescriptor(hbuf, [hbuf.numel() // V, V], [V, 1], [128, BV], lay2)
    d_desc = TensorDescriptor(vnew, [TT, HV * V], [HV * V, 1], [128, BV], lay2)
    _out_gl[grid](q_desc, k_desc, h_desc, d_desc, gc, rk, rq, o, ginfo, scale, TT, H=H, HV=HV, K=K, V=V, NK=BK // 64,
                  BV=BV, HS=HS, DT=_GL[q.dtype], num_warps=num_warps, **({"maxnreg": maxnreg} if maxnreg else {}))
