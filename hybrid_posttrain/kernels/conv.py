"""Fused boundary-aware short causal convolution (+ SiLU) in Triton, forward and backward.

The GDN layers run a depthwise causal convolution of width W (4) over the concatenated q/k/v
projections, then SiLU. transformers' torch fallback is three passes (conv1d, silu, cast) and keeps the
pre-activation for the backward; with packed sequences it also needs one pass per tap to mask the taps
that cross a document boundary (`models/hybrid.py:boundary_causal_conv1d`). Here one kernel does it all:

    out[b, t, c] = act( bias[c] + sum_j w[c, W-1-j] * x[b, t-j, c] * [t-j >= 0] * [doc(t-j) == doc(t)] )

x is read in the channel-last layout transformers already has ([B, C, T] that is the transpose of a
contiguous [B, T, C]), or by `causal_conv1d_btc` as a column slice of a wider projection output, so no
copy is made; `causal_conv1d_btc(..., splits=(Kq, Kk, Vv))` writes q, k and v as three contiguous
tensors (what the GDN kernels take) and reads their three gradients in place. The backward is one kernel:
it recomputes the pre-activation from x (W taps, cheap) instead of saving it, so the autograd graph holds
only x; dpre at the W-1 tokens past a tile is recomputed rather than written out and read back, so the
backward reads x and dy once and writes dx once (plus [tokens/256, C, W] fp32 dweight partials).

`causal_conv1d_ref` is the plain-PyTorch reference (same semantics) the tests compare against.
Triton is imported lazily; on a CPU the kernels run only under TRITON_INTERPRET=1 (tests, tiny shapes).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hybrid_posttrain.kernels._env import env_config
from hybrid_posttrain.kernels._host import cdiv
from hybrid_posttrain.kernels._launch import launch

__all__ = ["causal_conv1d", "causal_conv1d_btc", "causal_conv1d_ref", "seq_idx_from_cu_seqlens", "MAX_WIDTH"]


def seq_idx_from_cu_seqlens(cu_seqlens: torch.Tensor, total: int) -> torch.Tensor:
    """Per-token document index [total] (int32) from cumulative lengths [N+1]."""
    cu = cu_seqlens.long()
    return torch.repeat_interleave(torch.arange(cu.numel() - 1, device=cu.device, dtype=torch.int32),
                                   cu.diff(), output_size=total)


def causal_conv1d_ref(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                      activation: str | None = None, seq_idx: torch.Tensor | None = None) -> torch.Tensor:
    """Reference: x [B, C, T], weight [C, W], seq_idx [B, T] or [T] (document ids) or None -> [B, C, T].

    Computed in fp32, cast back to x.dtype.
    """
    b, c, t = x.shape
    width = weight.shape[-1]
    xf, wf = x.float(), weight.float()
    out = torch.zeros_like(xf)
    if seq_idx is not None:
        s = seq_idx.reshape(-1, t).expand(b, t)
    for j in range(width):
        shifted = F.pad(xf, (j, 0))[:, :, :t]
        tap = shifted * wf[:, width - 1 - j].view(1, c, 1)
        if seq_idx is not None and j > 0:
            same = torch.zeros(b, t, dtype=torch.bool, device=x.device)
            same[:, j:] = s[:, j:] == s[:, :-j]
            tap = tap * same[:, None, :]
        out = out + tap
    if bias is not None:
        out = out + bias.float().view(1, c, 1)
    if activation in ("silu", "swish"):
        out = F.silu(out)
    elif activation is not None:
        raise ValueError(f"unsupported conv activation {activation!r}")
    return out.to(x.dtype)


try:  # triton is optional: without it only the reference runs
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover
    triton = None

if triton is not None:
    @triton.jit
    def _seg_ptr(p0, p1, p2, row, offs_c, S1, S2, C, NSEG: tl.constexpr):
        """Addresses of [rows, channels] in NSEG (2 or 3) contiguous segments [B*T, S1], [B*T, S2-S1],
        [B*T, C-S2]: one pointer per element, so a segment-crossing tile is still one load or store."""
        c = offs_c[None, :]
        p = tl.where(c < S1, p0 + row[:, None] * S1 + c, p1 + row[:, None] * (S2 - S1) + (c - S1))
        if NSEG == 3:
            p = tl.where(c < S2, p, p2 + row[:, None] * (C - S2) + (c - S2))
        return p

    @triton.jit
    def _seg_load(p0, p1, p2, row, offs_c, m, sb, st, pid_b, T, S1, S2, C, NSEG: tl.constexpr):
        """dy[row, c] where dy is one [B, T, C] tensor (NSEG 1, strides sb / st) or NSEG contiguous
        segments [B*T, S1], [B*T, S2-S1], [B*T, C-S2] (q, k, v as the GDN kernels take them)."""
        if NSEG == 1:
            v = tl.load(p0 + pid_b * sb + (row - pid_b * T)[:, None] * st + offs_c[None, :], mask=m, other=0.0)
            v = v.to(tl.float32)
        else:
            v = tl.load(_seg_ptr(p0, p1, p2, row, offs_c, S1, S2, C, NSEG), mask=m, other=0.0).to(tl.float32)
        return v

    @triton.jit
    def _seg_store(p0, p1, p2, row, offs_c, val, m, sb, st, pid_b, T, S1, S2, C, NSEG: tl.constexpr):
        if NSEG == 1:
            tl.store(p0 + pid_b * sb + (row - pid_b * T)[:, None] * st + offs_c[None, :],
                     val.to(p0.dtype.element_ty), mask=m)
        else:
            tl.store(_seg_ptr(p0, p1, p2, row, offs_c, S1, S2, C, NSEG), val.to(p0.dtype.element_ty), mask=m)

    @triton.jit
    def _xd(x_ptr, s_ptr, offs_t, d: tl.constexpr, mt, s0, offs_c, mc, pid_b, T, sxb, sxt, ssb,
            HAS_SEQ: tl.constexpr):
        """x at tokens t+d of the tile's tokens t, zero where t+d is outside [0, T) or in another document
        than t (fp32), and that mask."""
        u = offs_t + d
        m = mt & (u >= 0) & (u < T)
        if HAS_SEQ:
            m = m & (tl.load(s_ptr + pid_b * ssb + u, mask=m, other=-2) == s0)
        xv = tl.load(x_ptr + pid_b * sxb + u[:, None] * sxt + offs_c[None, :], mask=m[:, None] & mc[None, :],
                     other=0.0).to(tl.float32)
        return xv, m

    @triton.jit
    def _pre4(w_ptr, b_ptr, offs_c, mc, xa, xb, xc, xd, HAS_BIAS: tl.constexpr):
        """Pre-activation from the masked x tiles xa = x[u], xb = x[u-1], xc = x[u-2], xd = x[u-3] and the
        width-4 weights [C, 4] (narrower convs come with zero taps in front): w3 xa + w2 xb + w1 xc + w0 xd + b."""
        p = (xa * tl.load(w_ptr + offs_c * 4 + 3, mask=mc, other=0.0).to(tl.float32)[None, :]
             + xb * tl.load(w_ptr + offs_c * 4 + 2, mask=mc, other=0.0).to(tl.float32)[None, :]
             + xc * tl.load(w_ptr + offs_c * 4 + 1, mask=mc, other=0.0).to(tl.float32)[None, :]
             + xd * tl.load(w_ptr + offs_c * 4, mask=mc, other=0.0).to(tl.float32)[None, :])
        if HAS_BIAS:
            p += tl.load(b_ptr + offs_c, mask=mc, other=0.0).to(tl.float32)[None, :]
        return p

    @triton.jit
    def _conv_fwd_kernel(x_ptr, w_ptr, b_ptr, s_ptr, y0, y1, y2, T, C, S1, S2, sxb, sxt, syb, syt, ssb,
                         HAS_BIAS: tl.constexpr, HAS_SEQ: tl.constexpr, ACT: tl.constexpr,
                         NSEG: tl.constexpr, BT: tl.constexpr, BC: tl.constexpr):
        pid_t = tl.program_id(0)
        pid_c = tl.program_id(1)
        pid_b = tl.program_id(2).to(tl.int64)
        offs_t = pid_t * BT + tl.arange(0, BT)
        offs_c = pid_c * BC + tl.arange(0, BC)
        mt = offs_t < T
        mc = offs_c < C
        s0 = offs_t
        if HAS_SEQ:
            s0 = tl.load(s_ptr + pid_b * ssb + offs_t, mask=mt, other=-1)
        x0, _m = _xd(x_ptr, s_ptr, offs_t, 0, mt, s0, offs_c, mc, pid_b, T, sxb, sxt, ssb, HAS_SEQ)
        xm1, _m = _xd(x_ptr, s_ptr, offs_t, -1, mt, s0, offs_c, mc, pid_b, T, sxb, sxt, ssb, HAS_SEQ)
        xm2, _m = _xd(x_ptr, s_ptr, offs_t, -2, mt, s0, offs_c, mc, pid_b, T, sxb, sxt, ssb, HAS_SEQ)
        xm3, _m = _xd(x_ptr, s_ptr, offs_t, -3, mt, s0, offs_c, mc, pid_b, T, sxb, sxt, ssb, HAS_SEQ)
        acc = _pre4(w_ptr, b_ptr, offs_c, mc, x0, xm1, xm2, xm3, HAS_BIAS)
        if ACT:
            acc = acc * tl.sigmoid(acc)
        _seg_store(y0, y1, y2, pid_b * T + offs_t, offs_c, acc, mt[:, None] & mc[None, :], syb, syt, pid_b, T,
                   S1, S2, C, NSEG)

    @triton.jit
    def _dpre(dy0, dy1, dy2, w_ptr, b_ptr, pid_b, offs_t, d: tl.constexpr, m, offs_c, mc, T, S1, S2, C, sdyb, sdyt,
              xa, xb, xc, xd, HAS_BIAS: tl.constexpr, ACT: tl.constexpr, NSEG: tl.constexpr):
        """dpre at tokens t+d (zero where m is off): dy * silu'(pre), pre = w3 x[t+d] + w2 x[t+d-1] + w1 x[t+d-2]
        + w0 x[t+d-3] (+ bias), from the already masked x tiles xa = x[t+d], xb = x[t+d-1], ..."""
        dp = _seg_load(dy0, dy1, dy2, pid_b * T + offs_t + d, offs_c, m[:, None] & mc[None, :], sdyb, sdyt, pid_b, T,
                       S1, S2, C, NSEG)
        if ACT:
            p = _pre4(w_ptr, b_ptr, offs_c, mc, xa, xb, xc, xd, HAS_BIAS)
            sg = tl.sigmoid(p)
            dp = dp * sg * (1.0 + p * (1.0 - sg))
        return dp

    @triton.jit
    def _conv_bwd_kernel(x_ptr, w_ptr, b_ptr, s_ptr, dy0, dy1, dy2, dx_ptr, dw_ptr, db_ptr, T, C, S1, S2, NPART,
                         sxb, sxt, sdyb, sdyt, sdxb, sdxt, ssb,
                         HAS_BIAS: tl.constexpr, HAS_SEQ: tl.constexpr, ACT: tl.constexpr, NSEG: tl.constexpr,
                         BT: tl.constexpr, BC: tl.constexpr, TILES):
        # Width 4 (narrower convs come with zero taps in front). One pass over TILES consecutive token
        # tiles. Per tile, x is loaded once at each of the 7 offsets t-3 .. t+3 (masked to t's document),
        # dy at t .. t+3; then dpre = dy * silu'(pre) at t .. t+3 (pre recomputed: the rows past the tile
        # are recomputed rather than written out and read back),
        #   dx[t] = sum_i w[3-i] dpre[t+i],  dweight[3-j] += dpre[t] x[t-j],  dbias += dpre[t],
        # the last two kept elementwise in registers and reduced once per program.
        pid_t = tl.program_id(0)
        pid_c = tl.program_id(1)
        pid_b = tl.program_id(2).to(tl.int64)
        offs_c = pid_c * BC + tl.arange(0, BC)
        mc = offs_c < C
        w0 = tl.load(w_ptr + offs_c * 4, mask=mc, other=0.0).to(tl.float32)[None, :]
        w1 = tl.load(w_ptr + offs_c * 4 + 1, mask=mc, other=0.0).to(tl.float32)[None, :]
        w2 = tl.load(w_ptr + offs_c * 4 + 2, mask=mc, other=0.0).to(tl.float32)[None, :]
        w3 = tl.load(w_ptr + offs_c * 4 + 3, mask=mc, other=0.0).to(tl.float32)[None, :]
        dw0 = tl.zeros((BT, BC), dtype=tl.float32)
        dw1 = tl.zeros((BT, BC), dtype=tl.float32)
        dw2 = tl.zeros((BT, BC), dtype=tl.float32)
        dw3 = tl.zeros((BT, BC), dtype=tl.float32)
        dbv = tl.zeros((BT, BC), dtype=tl.float32)
        for tile in range(TILES):  # a runtime count: with a constexpr one the loop was unrolled (offline: 255 regs)
            offs_t = (pid_t * TILES + tile) * BT + tl.arange(0, BT)
            mt = offs_t < T
            s0 = offs_t
            if HAS_SEQ:
                s0 = tl.load(s_ptr + pid_b * ssb + offs_t, mask=mt, other=-1)
            xm3, _m = _xd(x_ptr, s_ptr, offs_t, -3, mt, s0, offs_c, mc, pid_b, T, sxb, sxt, ssb, HAS_SEQ)
            xm2, _m = _xd(x_ptr, s_ptr, offs_t, -2, mt, s0, offs_c, mc, pid_b, T, sxb, sxt, ssb, HAS_SEQ)
            xm1, _m = _xd(x_ptr, s_ptr, offs_t, -1, mt, s0, offs_c, mc, pid_b, T, sxb, sxt, ssb, HAS_SEQ)
            x0, m0 = _xd(x_ptr, s_ptr, offs_t, 0, mt, s0, offs_c, mc, pid_b, T, sxb, sxt, ssb, HAS_SEQ)
            xp1, m1 = _xd(x_ptr, s_ptr, offs_t, 1, mt, s0, offs_c, mc, pid_b, T, sxb, sxt, ssb, HAS_SEQ)
            xp2, m2 = _xd(x_ptr, s_ptr, offs_t, 2, mt, s0, offs_c, mc, pid_b, T, sxb, sxt, ssb, HAS_SEQ)
            xp3, m3 = _xd(x_ptr, s_ptr, offs_t, 3, mt, s0, offs_c, mc, pid_b, T, sxb, sxt, ssb, HAS_SEQ)
            dp0 = _dpre(dy0, dy1, dy2, w_ptr, b_ptr, pid_b, offs_t, 0, m0, offs_c, mc, T, S1, S2, C, sdyb, sdyt,
                        x0, xm1, xm2, xm3, HAS_BIAS, ACT, NSEG)
            dx = dp0 * w3
            dx += _dpre(dy0, dy1, dy2, w_ptr, b_ptr, pid_b, offs_t, 1, m1, offs_c, mc, T, S1, S2, C, sdyb, sdyt,
                        xp1, x0, xm1, xm2, HAS_BIAS, ACT, NSEG) * w2
            dx += _dpre(dy0, dy1, dy2, w_ptr, b_ptr, pid_b, offs_t, 2, m2, offs_c, mc, T, S1, S2, C, sdyb, sdyt,
                        xp2, xp1, x0, xm1, HAS_BIAS, ACT, NSEG) * w1
            dx += _dpre(dy0, dy1, dy2, w_ptr, b_ptr, pid_b, offs_t, 3, m3, offs_c, mc, T, S1, S2, C, sdyb, sdyt,
                        xp3, xp2, xp1, x0, HAS_BIAS, ACT, NSEG) * w0
            dbv += dp0
            dw3 += dp0 * x0
            dw2 += dp0 * xm1
            dw1 += dp0 * xm2
            dw0 += dp0 * xm3
            tl.store(dx_ptr + pid_b * sdxb + offs_t[:, None] * sdxt + offs_c[None, :],
                     dx.to(dx_ptr.dtype.element_ty), mask=mt[:, None] & mc[None, :])
        part = pid_b * NPART + pid_t
        tl.store(db_ptr + part * C + offs_c, tl.sum(dbv, axis=0), mask=mc)
        base = dw_ptr + part * C * 4 + offs_c * 4
        tl.store(base, tl.sum(dw0, axis=0), mask=mc)
        tl.store(base + 1, tl.sum(dw1, axis=0), mask=mc)
        tl.store(base + 2, tl.sum(dw2, axis=0), mask=mc)
        tl.store(base + 3, tl.sum(dw3, axis=0), mask=mc)



MAX_WIDTH = 4  # the kernels are written for width 4 (narrower convs get zero taps in front)


def _kernels():
    if triton is None:
        raise RuntimeError("the fused conv needs triton (pip install triton)")
    return triton, _conv_fwd_kernel, _conv_bwd_kernel


# tile of both kernels; benchmarks/conv.py sweeps it (HPT_CONV_CONFIG='{"bt": 8, "warps": 4}'). A two-kernel
# backward (dpre written out, then a dx kernel) measured the same on the H100 and was removed
# (benchmarks/NOTES_train_step.md).
CONFIG = env_config("HPT_CONV_CONFIG", {"bt": 16, "bc": 64, "warps": 8})


def _cfg(C: int):
    # 16 x 64 tiles at 8 warps (benchmarks/conv.py sweep on the H100: fastest fwd+bwd; 128 registers, no spills)
    bc = CONFIG["bc"] if C >= CONFIG["bc"] else max(16, 1 << (max(C, 1) - 1).bit_length())
    return CONFIG["bt"], bc


def _bounds(splits, C):
    if splits is None:
        return 1, C, C
    if sum(splits) != C or not 1 <= len(splits) <= 3:
        raise ValueError(f"splits {splits} must be 1-3 sizes summing to the {C} channels")
    s1 = splits[0]
    s2 = s1 + (splits[1] if len(splits) > 1 else 0)
    return len(splits), s1, s2


class _CausalConv1dFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x_tc, weight, bias, seq_idx, act, splits):
        triton, fwd, _ = _kernels()
        B, T, C = x_tc.shape
        W = weight.shape[-1]
        w4 = F.pad(weight.float(), (MAX_WIDTH - W, 0)).contiguous()  # zero taps in front: the kernels are width 4
        nseg, s1, s2 = _bounds(splits, C)
        if nseg == 1:
            ys = [torch.empty(B, T, C, device=x_tc.device, dtype=x_tc.dtype)]
        else:
            ys = [torch.empty(B, T, n, device=x_tc.device, dtype=x_tc.dtype) for n in splits]
        yp = ys + [ys[0]] * (3 - len(ys))
        BT, BC = _cfg(C)
        s = seq_idx if seq_idx is not None else x_tc  # placeholder pointer
        ssb = seq_idx.stride(0) if seq_idx is not None else 0
        grid = (cdiv(T, BT), cdiv(C, BC), B)
        launch(fwd, grid, x_tc, w4, bias if bias is not None else w4, s, *yp, T, C, s1, s2, x_tc.stride(0),
                  x_tc.stride(1), ys[0].stride(0), ys[0].stride(1), ssb, HAS_BIAS=bias is not None,
                  HAS_SEQ=seq_idx is not None, ACT=act, NSEG=nseg, BT=BT, BC=BC, num_warps=CONFIG["warps"])
        ctx.save_for_backward(x_tc, w4, bias, seq_idx)
        ctx.act, ctx.has_bias, ctx.splits, ctx.width, ctx.w_dtype = act, bias is not None, splits, W, weight.dtype
        return tuple(ys) if splits is not None else ys[0]

    @staticmethod
    def backward(ctx, *dys):
        triton, _, bwd = _kernels()
        x_tc, w4, bias, seq_idx = ctx.saved_tensors
        B, T, C = x_tc.shape
        W = ctx.width
        nseg, s1, s2 = _bounds(ctx.splits, C)
        dys = [torch.zeros(B, T, n, device=x_tc.device, dtype=x_tc.dtype) if d is None else d
               for d, n in zip(dys, ctx.splits or (C,), strict=True)]
        dys = [d if d.stride(-1) == 1 and (nseg == 1 or d.is_contiguous()) else d.contiguous() for d in dys]
        dyp = dys + [dys[0]] * (3 - len(dys))
        BT, BC = _cfg(C)
        ntb = cdiv(T, BT)
        tiles = 16 if ntb >= 64 else 1  # tokens per program in the dweight reduction: 256 at full size
        npart = cdiv(ntb, tiles)
        dx = torch.empty(B, T, C, device=x_tc.device, dtype=x_tc.dtype)
        dw_part = torch.empty(B * npart, C, MAX_WIDTH, device=x_tc.device, dtype=torch.float32)
        db_part = torch.empty(B * npart, C, device=x_tc.device, dtype=torch.float32)
        s = seq_idx if seq_idx is not None else x_tc
        ssb = seq_idx.stride(0) if seq_idx is not None else 0
        launch(bwd, (npart, cdiv(C, BC), B),
            x_tc, w4, bias if bias is not None else w4, s, *dyp, dx, dw_part, db_part, T, C, s1, s2, npart,
            x_tc.stride(0), x_tc.stride(1), dys[0].stride(0), dys[0].stride(1), dx.stride(0), dx.stride(1), ssb,
            HAS_BIAS=ctx.has_bias, HAS_SEQ=seq_idx is not None, ACT=ctx.act, NSEG=nseg, BT=BT, BC=BC,
            TILES=tiles, num_warps=CONFIG["warps"])
        dw = dw_part.sum(0)[:, MAX_WIDTH - W:].to(ctx.w_dtype)
        db = db_part.sum(0).to(bias.dtype) if ctx.has_bias else None
        return dx, dw, db, None, None, None


def _prepare(weight, activation, seq_idx, B, T, device):
    if activation not in (None, "silu", "swish"):
        raise ValueError(f"unsupported conv activation {activation!r}")
    if weight.dim() == 3:
        weight = weight.squeeze(1)
    if weight.shape[-1] > MAX_WIDTH:
        raise ValueError(f"the fused conv supports widths up to {MAX_WIDTH}, got {weight.shape[-1]}")
    if seq_idx is not None:
        seq_idx = seq_idx.reshape(-1, T)
        if seq_idx.shape[0] != B:
            seq_idx = seq_idx.expand(B, T)
        seq_idx = seq_idx.to(device=device, dtype=torch.int32)
        if seq_idx.stride(-1) != 1:
            seq_idx = seq_idx.contiguous()
    return weight, seq_idx


def causal_conv1d_btc(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                      activation: str | None = None, seq_idx: torch.Tensor | None = None,
                      splits: tuple[int, ...] | None = None):
    """The fused conv on channel-last x [B, T, C] (any batch and token strides, channel stride 1: a column
    slice of a larger projection output is read in place).

    Returns y [B, T, C], or with `splits` (1-3 channel counts summing to C) one contiguous [B, T, n]
    tensor per split -- q, k and v as the GDN kernels take them, with no copy in between; their
    gradients are read in place in the backward.
    """
    B, T, C = x.shape
    weight, seq_idx = _prepare(weight, activation, seq_idx, B, T, x.device)
    if x.stride(-1) != 1:
        x = x.contiguous()
    return _CausalConv1dFn.apply(x, weight, bias, seq_idx, activation is not None,
                                 tuple(splits) if splits is not None else None)


def causal_conv1d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                  activation: str | None = None, seq_idx: torch.Tensor | None = None) -> torch.Tensor:
    """Fused depthwise causal conv: x [B, C, T], weight [C, W] (W <= 4) -> [B, C, T] (a view of a [B, T, C]
    buffer).

    seq_idx: [B, T] or [T] (B == 1) document ids; taps never cross a change of id. Differentiable in x,
    weight and bias. activation: None or 'silu'/'swish'.
    """
    return causal_conv1d_btc(x.transpose(1, 2), weight, bias, activation, seq_idx).transpose(1, 2)
