"""The forward's output kernel over pairs of chunks (`chunk._fwd_out` with S = 2) in Gluon, for Hopper GPUs.

Gluon is Triton's lower-level language: shared memory, TMA copies and warpgroup MMAs are explicit. The Triton
`_fwd_out` waits on global loads at two programs an SM (Nsight Compute, benchmarks/NOTES_gdn.md session 23): its
software pipeline requests a V block's h and delta only once the q k^T product is done, and its 255 registers leave
no room for more programs. Here every program requests its first tiles by TMA at its start (q and k of the pair, h
and delta of the first one or two V blocks), loads its per-token values meanwhile, and builds q k^T as three [64, 64]
pieces (the first chunk's rows see only its own keys), each turned into the half-precision operand of the output's
product before the next is read, so that no [128, 128] fp32 tile is held. Each row half of the output takes one
accumulator: f (q h), scaled in registers, then A delta accumulated onto it. The key columns are exact blocks (96 as
64 + 32), so no padded column is read or multiplied.

H100 (session 24, call 6; the kernel alone on one forward's buffers, 8x4096): Qwen3-Next 0.439 ms against the Triton
kernel's 0.505, Olmo-Hybrid 0.534 against 0.596; outputs within 1.3e-5 of the Triton kernel's.

Same inputs and outputs as `_fwd_out` (o, and 1/||q|| to rq for the backward). `usable` says where it runs; elsewhere,
and on the CPU (the Triton interpreter does not run Gluon), `chunk._fwd` launches `_fwd_out`. Gluon is experimental
and renames functions between Triton releases: where it does not import, the Triton kernel runs, and a CPU test
compiles this kernel for sm_90 with the installed Triton.
"""

from __future__ import annotations

import functools

import torch

from hybrid_posttrain.kernels._launch import launch

try:
    from triton.experimental import gluon
    from triton.experimental.gluon import language as gl
    from triton.experimental.gluon.language.nvidia.hopper import (  # noqa: F401  (fence_async_shared: the backward's)
        fence_async_shared,
        mbarrier,
        tma,
        warpgroup_mma,
        warpgroup_mma_wait,
    )
    from triton.experimental.gluon.nvidia.hopper import TensorDescriptor
    from triton.runtime.jit import constexpr_function
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
    # the CTA-wide barrier's name: thread_barrier up to Triton 3.6, barrier in 3.9 (the backward's kernels)
    _cta_barrier = gl.barrier if hasattr(gl, "barrier") else gl.thread_barrier

    @constexpr_function
    def _mma(num_warps, n):
        """The layout of a warpgroup MMA accumulator with 64 rows and n columns: 4 warps down the rows, and with 8 warps
        two warpgroups taking half of the columns each (every kernel here)."""
        wn = num_warps // 4
        return gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, wn], instr_shape=[16, n // wn, 16])

    @constexpr_function
    def _aop(parent):
        """The layout of a 16-bit A operand in registers for an MMA onto an accumulator of layout parent."""
        return gl.DotOperandLayout(operand_index=0, parent=parent, k_width=2)

    @gluon.jit
    def _rows_prog(info, NI: gl.constexpr, H: gl.constexpr, HV: gl.constexpr):
        """A per-chunk (or per-group) program's row of `info` (NI int32s a row: first and end token first), its value
        head and q/k head, and its first and end token (int64); the grid's axes as `chunk._chunk_head` reads them."""
        if gl.num_programs(1) == HV:
            i_r = gl.program_id(0)
            i_hv = gl.program_id(1)
        else:
            i_r = gl.program_id(1)
            i_hv = gl.program_id(0)
        bos = gl.load(info + NI * i_r).to(gl.int64)
        eos = gl.load(info + NI * i_r + 1).to(gl.int64)
        return i_r, i_hv, i_hv // (HV // H), bos, eos

    @gluon.jit
    def _key_tiles(qa_desc, qb_desc, ka_desc, kb_desc, bar, t0, col, ROWS: gl.constexpr, W1: gl.constexpr,
                   W2: gl.constexpr, DT: gl.constexpr):
        """Shared memory for ROWS rows of q and k from token t0, the key columns from col as blocks of W1 and W2 (qb / kb
        are qa / ka where W2 = 0), and their TMA loads, all completing on bar."""
        qa = gl.allocate_shared_memory(DT, [ROWS, W1], qa_desc.layout)
        ka = gl.allocate_shared_memory(DT, [ROWS, W1], ka_desc.layout)
        if W2 > 0:
            qb = gl.allocate_shared_memory(DT, [ROWS, W2], qb_desc.layout)
            kb = gl.allocate_shared_memory(DT, [ROWS, W2], kb_desc.layout)
        else:
            qb = qa
            kb = ka
        NB: gl.constexpr = 2 * ROWS * (W1 + W2) * 2  # q and k, 2-byte elements
        mbarrier.expect(bar, NB)
        _tma_load(qa_desc, [t0, col], bar, qa)
        _tma_load(ka_desc, [t0, col], bar, ka)
        if W2 > 0:
            _tma_load(qb_desc, [t0, col + W1], bar, qb)
            _tma_load(kb_desc, [t0, col + W1], bar, kb)
        return qa, qb, ka, kb

    @gluon.jit
    def _barriers(N: gl.constexpr):
        """N mbarriers in shared memory, each initialised for one arrival (a TMA group's completion)."""
        bar = gl.allocate_shared_memory(gl.int64, [N, 1], mbarrier.MBarrierLayout())
        for i in gl.static_range(N):
            mbarrier.init(bar.index(i), count=1)
        return bar

    @gluon.jit
    def _drop_barriers(bar, N: gl.constexpr):
        """Invalidate `_barriers`' N mbarriers at a program's end."""
        for i in gl.static_range(N):
            mbarrier.invalidate(bar.index(i))

    @gluon.jit
    def _pair_tiles(a_desc, b_desc, SA: gl.constexpr, SB: gl.constexpr, W2: gl.constexpr, DT: gl.constexpr):
        """Shared memory for a tile's two key blocks: a of shape SA, b of shape SB where the second block has W2 > 0
        columns or rows, else b is a."""
        a = gl.allocate_shared_memory(DT, SA, a_desc.layout)
        if W2 > 0:
            b = gl.allocate_shared_memory(DT, SB, b_desc.layout)
        else:
            b = a
        return a, b

    @gluon.jit
    def _load_k(ka_desc, kb_desc, t0, col, bar, ka, kb, W1: gl.constexpr, W2: gl.constexpr):
        """TMA loads of a chunk's k as key blocks (rows t0.., columns col..; `_pair_tiles` of [64, W1] and [64, W2]),
        completing on bar (its expect: the caller's): `_bwd_wy` and the prep, which read k without q."""
        _tma_load(ka_desc, [t0, col], bar, ka)
        if W2 > 0:
            _tma_load(kb_desc, [t0, col + W1], bar, kb)

    @gluon.jit
    def _state_tiles(ha_desc, hb_desc, NSLOT: gl.constexpr, W1: gl.constexpr, W2: gl.constexpr, BV: gl.constexpr,
                     DT: gl.constexpr):
        """NSLOT slots of shared memory for a state's V block, its key rows as blocks of W1 and W2 (hb is ha where
        W2 = 0)."""
        return _pair_tiles(ha_desc, hb_desc, [NSLOT, W1, BV], [NSLOT, W2, BV], W2, DT)

    @gluon.jit
    def _load_state(ha_desc, hb_desc, row, col, bar, ha, hb, W1: gl.constexpr, W2: gl.constexpr):
        """TMA loads of a state's V block (rows row.., columns col..) into one slot (ha, hb), completing on bar."""
        _tma_load(ha_desc, [row, col], bar, ha)
        if W2 > 0:
            _tma_load(hb_desc, [row + W1, col], bar, hb)

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
    def _qk(qa, qb, ka, kb, r: gl.constexpr, c: gl.constexpr, acc, W2: gl.constexpr):
        """Rows of chunk r of the pair against the keys of chunk c (raw q k^T, [64, 64]) over the key blocks, issued
        asynchronously onto acc (zeros)."""
        acc = warpgroup_mma(qa.slice(64 * r, 64), ka.slice(64 * c, 64).permute((1, 0)), acc, use_acc=False,
                            is_async=True)
        if W2 > 0:
            acc = warpgroup_mma(qb.slice(64 * r, 64), kb.slice(64 * c, 64).permute((1, 0)), acc, is_async=True)
        return acc

    @gluon.jit
    def _qh(qa, qb, ha, hb, r: gl.constexpr, acc, W2: gl.constexpr):
        """Rows of chunk r of the pair times the state h (its key blocks' rows ha, hb in shared memory)."""
        acc = warpgroup_mma(qa.slice(64 * r, 64), ha, acc, use_acc=False, is_async=True)
        if W2 > 0:
            acc = warpgroup_mma(qb.slice(64 * r, 64), hb, acc, is_async=True)
        return acc

    @gluon.jit
    def _out_gl(qa_desc, qb_desc, ka_desc, kb_desc, ha_desc, hb_desc, d_desc, gc, rk, rq_out, o, ginfo, scale, TT,
                H: gl.constexpr, HV: gl.constexpr, K: gl.constexpr, V: gl.constexpr, W1: gl.constexpr,
                W2: gl.constexpr, BV: gl.constexpr, NSLOT: gl.constexpr, HS: gl.constexpr, DT: gl.constexpr,
                L2: gl.constexpr, num_warps: gl.constexpr):
        """`chunk._fwd_out` for S = 2 (see its docstring for the algebra): one program a (group of two chunks, value
        head); the grid's axes as `chunk._chunk_head` reads them. The key columns as exact blocks of W1 and W2 (0:
        none) columns, [0, W1) and [W1, K) (Olmo-Hybrid's 96 as 64 + 32): no padded column is read or multiplied.
        h of a V block is a [W1, BV] and a [W2, BV] tile (TMA boxes are powers of two), delta one [128 tokens, BV]
        tile, in NSLOT slots (2: the next V block's loads in flight while this one's products run; 1 where two would
        leave room for one program an SM only: `slots`)."""
        i_g, i_hv, i_h, bos, eos = _rows_prog(ginfo, 4, H, HV)
        hidx = gl.load(ginfo + 4 * i_g + (2 if HS == 1 else 3)).to(gl.int64)
        NV: gl.constexpr = V // BV
        t0 = bos.to(gl.int32)
        hrow = ((hidx * HV + i_hv) * K).to(gl.int32)

        bar = _barriers(3)
        qa, qb, ka, kb = _key_tiles(qa_desc, qb_desc, ka_desc, kb_desc, bar.index(0), t0, i_h * K, 128, W1, W2, DT)
        ha_s, hb_s = _state_tiles(ha_desc, hb_desc, NSLOT, W1, W2, BV, DT)
        d_s = gl.allocate_shared_memory(DT, [NSLOT, 128, BV], d_desc.layout)
        NBV: gl.constexpr = (K + 128) * BV * 2  # h and delta of a V block
        for j in gl.static_range(NSLOT):
            if j < NV:
                mbarrier.expect(bar.index(1 + j), NBV)
                _load_state(ha_desc, hb_desc, hrow, j * BV, bar.index(1 + j), ha_s.index(j), hb_s.index(j), W1, W2)
                _tma_load(d_desc, [t0, i_hv * V + j * BV], bar.index(1 + j), d_s.index(j))

        # layouts: every accumulator has 64 rows ([64, 64] pieces of q k^T, [64, BV] outputs); with 8 warps two
        # warpgroups take half of each one's columns
        m64: gl.constexpr = _mma(num_warps, 64)
        mo: gl.constexpr = _mma(num_warps, BV)
        aop: gl.constexpr = _aop(mo)
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
        NQ: gl.constexpr = 2 if W2 > 0 else 1  # wgmma groups a piece of q k^T takes
        s00 = _qk(qa, qb, ka, kb, 0, 0, zq, W2)
        # the rows' 1/||q|| from shared memory while the first piece runs on the tensor cores
        rtb = gl.arange(0, 64, layout=gl.SliceLayout(1, blk))
        qf = qa.slice(0, 64).load(blk).to(gl.float32)
        ss0 = gl.sum(qf * qf, 1)
        qf = qa.slice(64, 64).load(blk).to(gl.float32)
        ss1 = gl.sum(qf * qf, 1)
        if W2 > 0:
            qf = qb.slice(0, 64).load(blk).to(gl.float32)
            ss0 += gl.convert_layout(gl.sum(qf * qf, 1), gl.SliceLayout(1, blk))
            qf = qb.slice(64, 64).load(blk).to(gl.float32)
            ss1 += gl.convert_layout(gl.sum(qf * qf, 1), gl.SliceLayout(1, blk))
        if L2:
            rq0 = gl.rsqrt(ss0 + 1e-6)
            rq1 = gl.rsqrt(ss1 + 1e-6)
        else:  # q as it is (`chunk._rnorm`: ones)
            rq0 = ss0 * 0.0 + 1.0
            rq1 = ss1 * 0.0 + 1.0
        gl.store(rq_out + i_hv.to(gl.int64) * TT + bos + rtb, rq0, mask=bos + rtb < eos)
        gl.store(rq_out + i_hv.to(gl.int64) * TT + bos + 64 + rtb, rq1, mask=bos + 64 + rtb < eos)
        rq_r0 = gl.convert_layout(rq0, gl.SliceLayout(1, m64)) * scale
        rq_r1 = gl.convert_layout(rq1, gl.SliceLayout(1, m64)) * scale
        s10 = _qk(qa, qb, ka, kb, 1, 0, zq, W2)
        s00 = warpgroup_mma_wait(num_outstanding=NQ, deps=(s00, ))
        A00 = _piece(s00, g_r0, g_c0, rq_r0, rk_c0, bos + r64, bos + c64, eos, True, DT, aop)
        s11 = _qk(qa, qb, ka, kb, 1, 1, zq, W2)
        s10 = warpgroup_mma_wait(num_outstanding=NQ, deps=(s10, ))
        A10 = _piece(s10, g_r1, g_c0, rq_r1, rk_c0, bos + 64 + r64, bos + c64, eos, False, DT, aop)
        s11 = warpgroup_mma_wait(num_outstanding=0, deps=(s11, ))
        A11 = _piece(s11, g_r1, g_c1, rq_r1, rk_c1, bos + 64 + r64, bos + 64 + c64, eos, True, DT, aop)

        ro = gl.arange(0, 64, layout=gl.SliceLayout(1, mo))
        co = gl.arange(0, BV, layout=gl.SliceLayout(0, mo))
        f0 = gl.convert_layout(rq_r0 * gl.exp(g_r0), gl.SliceLayout(1, mo))
        f1 = gl.convert_layout(rq_r1 * gl.exp(g_r1), gl.SliceLayout(1, mo))
        m_o0 = (bos + ro < eos)[:, None]
        m_o1 = (bos + 64 + ro < eos)[:, None]
        zero = gl.zeros([64, BV], gl.float32, mo)
        for iv in gl.static_range(NV):
            sl = iv % NSLOT
            mbarrier.wait(bar.index(1 + sl), phase=(iv // NSLOT) % 2)
            ha = ha_s.index(sl)
            hb = hb_s.index(sl)
            dv_s = d_s.index(sl)
            o0 = _qh(qa, qb, ha, hb, 0, zero, W2)
            o1 = _qh(qa, qb, ha, hb, 1, zero, W2)
            o0, o1 = warpgroup_mma_wait(num_outstanding=0, deps=(o0, o1))
            o0 = warpgroup_mma(A00, dv_s.slice(0, 64), o0 * f0[:, None], is_async=True)
            o1 = warpgroup_mma(A10, dv_s.slice(0, 64), o1 * f1[:, None], is_async=True)
            o1 = warpgroup_mma(A11, dv_s.slice(64, 64), o1, is_async=True)
            o0, o1 = warpgroup_mma_wait(num_outstanding=0, deps=(o0, o1))
            if iv + NSLOT < NV:  # this slot's next V block, while this one's output is stored
                mbarrier.expect(bar.index(1 + sl), NBV)
                _load_state(ha_desc, hb_desc, hrow, (iv + NSLOT) * BV, bar.index(1 + sl), ha, hb, W1, W2)
                _tma_load(d_desc, [t0, i_hv * V + (iv + NSLOT) * BV], bar.index(1 + sl), dv_s)
            off = ((bos + ro) * HV + i_hv)[:, None] * V + (iv * BV + co)[None, :]
            gl.store(o + off, o0.to(o.dtype.element_ty), mask=m_o0)
            gl.store(o + off + 64 * HV * V, o1.to(o.dtype.element_ty), mask=m_o1)
        _drop_barriers(bar, 3)


@functools.lru_cache(maxsize=8)
def _hopper(device: str) -> bool:
    return torch.cuda.get_device_capability(device)[0] == 9


def status() -> str | None:
    """Why this machine's forwards keep the Triton output kernel, or None where the Gluon one can run (a forward's own
    shapes and dtypes decide the rest: `fits`). For `hpt doctor`."""
    if gluon is None:
        return f"Gluon does not import with this Triton ({IMPORT_ERROR})"
    if not torch.cuda.is_available():
        return "no CUDA GPU"
    if not _hopper(f"cuda:{torch.cuda.current_device()}"):
        return f"not a Hopper GPU (compute capability {'.'.join(map(str, torch.cuda.get_device_capability()))})"
    return None


def usable(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, S: int, enabled: bool = True) -> bool:
    """Whether the Gluon kernel can take this forward's output (`fits`, on q's device)."""
    hopper = q.device.type == "cuda" and _hopper(str(q.device))
    # TMA reads from 16-byte aligned addresses (the driver's q / k are contiguous; a view at an odd offset is not)
    aligned = q.data_ptr() % 16 == 0 and k.data_ptr() % 16 == 0 and k.dtype == q.dtype
    return aligned and fits(q.dtype, v.dtype, q.shape[-1], v.shape[-1], S, hopper, enabled)


def key_blocks(K):
    """The kernel's key blocks (W1, W2): [0, 64) and [64, K), W2 = 0 for one block; W2 of 16, 32 or 64 columns (a
    multiple of the tensor cores' depth and of the TMA's 16 bytes, and a power of two as TMA boxes must be), else
    None. Key dims under 64 (one block of 16 or 32) compile but have never run on a GPU, so they are not taken."""
    w2 = K - 64
    return (64, w2) if w2 in (0, 16, 32, 64) else None


def slots(K, bv=BV):
    """(h, delta) slots of the kernel: two where q, k and two slots take at most 112 KB of shared memory (two programs
    an SM on an H100, 227 KB), else one (Qwen3-Next's K = 128: 96 KB; two slots were no faster there, session 24).
    bv: the value block (64; 32 in benchmarks/gluon_out.py's trials: two slots of 32 where one of 64 fits were slower,
    Qwen3-Next 0.439 -> 0.491 ms at 8x4096, session 25, call 9)."""
    return 2 if (2 * 128 * K + 2 * (K + 128) * bv) * 2 <= 112 * 1024 else 1


def warps(K):
    """(warps, register cap) of the kernel: 8 warps capped at 128 registers (two programs an SM) where it takes two
    slots, else 4 warps (255 registers, two programs an SM). H100 (session 24, call 6), the kernel alone at 8x4096:
    Olmo-Hybrid (two slots) 0.552 ms on 4 warps, 0.534 on 8 capped; Qwen3-Next (one slot) 0.439 / 0.455."""
    return (8, 128) if slots(K) == 2 else (4, None)


def fits(qdt, vdt, K, V, S, hopper, enabled=True) -> bool:
    """The rule of `usable`: CONFIG out_gluon on (enabled), Gluon imported, a Hopper GPU (sm_90: TMA and warpgroup
    MMAs as written), half-precision q, k and v of one dtype, pairs of chunks (S = 2), a key dim `key_blocks` takes
    (64, 80, 96, 128), a value dim in whole 64-column blocks."""
    return (enabled and gluon is not None and hopper and qdt in _GL and vdt == qdt and S == 2
            and key_blocks(K) is not None and V % BV == 0)


@functools.lru_cache(maxsize=64)
def _layout(box: tuple, dtype):
    """The default shared-memory layout of a [box] tile (`NVMMASharedLayout.get_default_for`, the most of a
    descriptor's host cost: kept)."""
    return gl.NVMMASharedLayout.get_default_for(list(box), _GL[dtype])


def _desc(x, shape, box):
    """A host TMA descriptor of x as a row-major [shape] tensor, read in [box] tiles (the box's default layout)."""
    return TensorDescriptor(x, shape, [shape[1], 1], box, _layout(tuple(box), x.dtype))


def k_descs(x, rows):
    """(xa, xb): descriptors of x ([tokens, H, K]: q or k) in [rows, W1] and [rows, W2] tiles (`key_blocks`; xb is xa
    where W2 = 0)."""
    TT, H, K = x.shape
    W1, W2 = key_blocks(K)
    xa = _desc(x, [TT, H * K], [rows, W1])
    return xa, _desc(x, [TT, H * K], [rows, W2]) if W2 else xa


def key_descs(q, k, rows):
    """(qa, qb, ka, kb): `k_descs` of q and of k."""
    return k_descs(q, rows) + k_descs(k, rows)


def state_descs(buf, bv=BV):
    """(ha, hb): descriptors of a per-chunk state buffer ([states, HV, K, V]) in [W1, bv] and [W2, bv] tiles."""
    K, V = buf.shape[-2], buf.shape[-1]
    W1, W2 = key_blocks(K)
    ha = _desc(buf, [buf.numel() // V, V], [W1, bv])
    return ha, _desc(buf, [buf.numel() // V, V], [W2, bv]) if W2 else ha


def token_desc(x, rows, bv=BV):
    """A descriptor of a [tokens, HV, V] tensor in [rows, bv] tiles."""
    return _desc(x, [x.shape[0], x.shape[1] * x.shape[2]], [rows, bv])


def out_args(q, k, hbuf, vnew, HS, l2=True, nslot=None, bv=BV):
    """`_out_gl`'s descriptors (its first arguments, in order) and constexprs but the warps (slots: `slots` unless
    given)."""
    TT, H, K = q.shape
    HV, V = vnew.shape[1], vnew.shape[2]
    W1, W2 = key_blocks(K)
    descs = key_descs(q, k, 128) + state_descs(hbuf, bv) + (token_desc(vnew, 128, bv),)
    return descs, dict(H=H, HV=HV, K=K, V=V, W1=W1, W2=W2, BV=bv, NSLOT=nslot or slots(K, bv), HS=HS,
                       DT=_GL[q.dtype], L2=l2)


def desc_type(d) -> str:
    """The signature type Triton gives a host TMA descriptor argument (offline compiles: benchmarks/gluon_out.py)."""
    dt = {torch.bfloat16: "bf16", torch.float16: "fp16"}[d.base.dtype]
    return f"tensordesc<{dt}{list(d.block_shape)},{d.layout!r}>"


def run(q, k, gc, rk, rq, hbuf, vnew, o, ginfo, scale, HS, grid, num_warps=None, maxnreg=None, l2=True, nslot=None,
        bv=BV):
    """Launch `_out_gl` on the `_fwd_out` arguments (q, k: [tokens, H, K]; hbuf: [states, HV, K, V]; vnew, o:
    [tokens, HV, V]; ginfo: the groups' rows; grid as `chunk._chunk_grid`; l2: q and k L2-normalised in the kernel,
    their 1/||.|| from q here and from rk). Warps and register cap: `warps`, and slots: `slots`, unless given; bv:
    the value block (V a multiple of it)."""
    if num_warps is None:
        num_warps, maxnreg = warps(q.shape[-1])
    descs, consts = out_args(q, k, hbuf, vnew, HS, l2, nslot, bv)
    launch(_out_gl, grid, *descs, gc, rk, rq, o, ginfo, scale, q.shape[0], **consts, num_warps=num_warps,
           **({"maxnreg": maxnreg} if maxnreg else {}))
