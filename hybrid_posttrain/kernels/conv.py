"""Fused boundary-aware short causal convolution (+ SiLU) in Triton, forward and backward.

The GDN layers run a depthwise causal convolution of width W (4) over the concatenated q/k/v
projections, then SiLU. transformers' torch fallback is three passes (conv1d, silu, cast) and keeps the
pre-activation for the backward; with packed sequences it also needs one pass per tap to mask the taps
that cross a document boundary (`models/hybrid.py:boundary_causal_conv1d`). Here one kernel does it all:

    out[b, t, c] = act( bias[c] + sum_j w[c, W-1-j] * x[b, t-j, c] * [t-j >= 0] * [doc(t-j) == doc(t)] )

x is read in the channel-last layout transformers already has ([B, C, T] that is the transpose of a
contiguous [B, T, C]), so no copy is made. The backward recomputes the pre-activation from x (W taps,
cheap) instead of saving it, so the autograd graph holds only x. The backward is two kernels: one writes
dpre = dy * silu'(pre) and per-block partial sums of dweight / dbias (reduced in fp32), one gathers dx
from dpre (two small kernels instead of one keep every tile in registers).

`causal_conv1d_ref` is the plain-PyTorch reference (same semantics) the tests compare against.
Triton is imported lazily; on a CPU the kernels run only under TRITON_INTERPRET=1 (tests, tiny shapes).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["causal_conv1d", "causal_conv1d_ref", "seq_idx_from_cu_seqlens"]


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
    def _conv_fwd_kernel(x_ptr, w_ptr, b_ptr, s_ptr, y_ptr, T, C, sxb, sxt, syb, syt, ssb,
             W: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_SEQ: tl.constexpr, ACT: tl.constexpr,
             BT: tl.constexpr, BC: tl.constexpr):
        pid_t = tl.program_id(0)
        pid_c = tl.program_id(1)
        pid_b = tl.program_id(2).to(tl.int64)
        offs_t = pid_t * BT + tl.arange(0, BT)
        offs_c = pid_c * BC + tl.arange(0, BC)
        mt = offs_t < T
        mc = offs_c < C
        if HAS_SEQ:
            s0 = tl.load(s_ptr + pid_b * ssb + offs_t, mask=mt, other=-1)
        acc = tl.zeros((BT, BC), dtype=tl.float32)
        for j in tl.static_range(W):
            tj = offs_t - j
            m = mt & (tj >= 0)
            if HAS_SEQ:
                sj = tl.load(s_ptr + pid_b * ssb + tj, mask=m, other=-2)
                m = m & (sj == s0)
            xv = tl.load(x_ptr + pid_b * sxb + tj[:, None] * sxt + offs_c[None, :],
                         mask=m[:, None] & mc[None, :], other=0.0).to(tl.float32)
            wv = tl.load(w_ptr + offs_c * W + (W - 1 - j), mask=mc, other=0.0).to(tl.float32)
            acc += xv * wv[None, :]
        if HAS_BIAS:
            acc += tl.load(b_ptr + offs_c, mask=mc, other=0.0).to(tl.float32)[None, :]
        if ACT:
            acc = acc * tl.sigmoid(acc)
        tl.store(y_ptr + pid_b * syb + offs_t[:, None] * syt + offs_c[None, :], acc.to(y_ptr.dtype.element_ty),
                 mask=mt[:, None] & mc[None, :])

    @triton.jit
    def _conv_dpre_kernel(x_ptr, w_ptr, b_ptr, s_ptr, dy_ptr, dp_ptr, dw_ptr, db_ptr, T, C, NPART,
                          sxb, sxt, sdyb, sdyt, ssb,
                          W: tl.constexpr, WP: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_SEQ: tl.constexpr,
                          ACT: tl.constexpr, BT: tl.constexpr, BC: tl.constexpr, TILES: tl.constexpr):
        # Over TILES consecutive token tiles: dpre = dy * silu'(pre) (pre recomputed from x), written as
        # [B, T, C] (when ACT), and this program's partial sums of dweight[c, k] = sum_t dpre[t] x[t-(W-1-k)]
        # and dbias[c] = sum_t dpre[t]
        pid_t = tl.program_id(0)
        pid_c = tl.program_id(1)
        pid_b = tl.program_id(2).to(tl.int64)
        offs_c = pid_c * BC + tl.arange(0, BC)
        mc = offs_c < C
        kk = tl.arange(0, WP)
        dwacc = tl.zeros((WP, BC), dtype=tl.float32)
        dbacc = tl.zeros((BC,), dtype=tl.float32)
        for tile in range(TILES):
            offs_t = (pid_t * TILES + tile) * BT + tl.arange(0, BT)
            mt = offs_t < T
            mtc = mt[:, None] & mc[None, :]
            s0 = offs_t
            if HAS_SEQ:
                s0 = tl.load(s_ptr + pid_b * ssb + offs_t, mask=mt, other=-1)
            dp = tl.load(dy_ptr + pid_b * sdyb + offs_t[:, None] * sdyt + offs_c[None, :], mask=mtc,
                         other=0.0).to(tl.float32)
            if ACT:
                p = tl.zeros((BT, BC), dtype=tl.float32)
                for j in tl.static_range(W):
                    tj = offs_t - j
                    m = mt & (tj >= 0)
                    if HAS_SEQ:
                        sj = tl.load(s_ptr + pid_b * ssb + tj, mask=m, other=-2)
                        m = m & (sj == s0)
                    xv = tl.load(x_ptr + pid_b * sxb + tj[:, None] * sxt + offs_c[None, :],
                                 mask=m[:, None] & mc[None, :], other=0.0).to(tl.float32)
                    wv = tl.load(w_ptr + offs_c * W + (W - 1 - j), mask=mc, other=0.0).to(tl.float32)
                    p += xv * wv[None, :]
                if HAS_BIAS:
                    p += tl.load(b_ptr + offs_c, mask=mc, other=0.0).to(tl.float32)[None, :]
                sg = tl.sigmoid(p)
                dp = dp * sg * (1.0 + p * (1.0 - sg))
                tl.store(dp_ptr + pid_b * sdyb + offs_t[:, None] * sdyt + offs_c[None, :],
                         dp.to(dp_ptr.dtype.element_ty), mask=mtc)
            dbacc += tl.sum(dp, axis=0)
            for j in tl.static_range(W):
                tj = offs_t - j
                m = mt & (tj >= 0)
                if HAS_SEQ:
                    sj = tl.load(s_ptr + pid_b * ssb + tj, mask=m, other=-2)
                    m = m & (sj == s0)
                xv = tl.load(x_ptr + pid_b * sxb + tj[:, None] * sxt + offs_c[None, :],
                             mask=m[:, None] & mc[None, :], other=0.0).to(tl.float32)
                col = tl.sum(xv * dp, axis=0)
                dwacc += tl.where(kk[:, None] == (W - 1 - j), col[None, :], 0.0)
        part = pid_b * NPART + pid_t
        tl.store(db_ptr + part * C + offs_c, dbacc, mask=mc)
        tl.store(dw_ptr + part * C * WP + offs_c[None, :] * WP + kk[:, None], dwacc,
                 mask=mc[None, :] & (kk[:, None] < W))

    @triton.jit
    def _conv_dx_kernel(w_ptr, s_ptr, dp_ptr, dx_ptr, T, C, sdpb, sdpt, sdxb, sdxt, ssb,
                        W: tl.constexpr, HAS_SEQ: tl.constexpr, BT: tl.constexpr, BC: tl.constexpr):
        # dx[t] = sum_i w[W-1-i] dpre[t+i] over the outputs t+i of the same document
        pid_t = tl.program_id(0)
        pid_c = tl.program_id(1)
        pid_b = tl.program_id(2).to(tl.int64)
        offs_t = pid_t * BT + tl.arange(0, BT)
        offs_c = pid_c * BC + tl.arange(0, BC)
        mt = offs_t < T
        mc = offs_c < C
        if HAS_SEQ:
            s0 = tl.load(s_ptr + pid_b * ssb + offs_t, mask=mt, other=-1)
        dx = tl.zeros((BT, BC), dtype=tl.float32)
        for i in tl.static_range(W):
            u = offs_t + i
            m = mt & (u < T)
            if HAS_SEQ:
                su = tl.load(s_ptr + pid_b * ssb + u, mask=m, other=-3)
                m = m & (su == s0)
            dp = tl.load(dp_ptr + pid_b * sdpb + u[:, None] * sdpt + offs_c[None, :],
                         mask=m[:, None] & mc[None, :], other=0.0).to(tl.float32)
            wv = tl.load(w_ptr + offs_c * W + (W - 1 - i), mask=mc, other=0.0).to(tl.float32)
            dx += dp * wv[None, :]
        tl.store(dx_ptr + pid_b * sdxb + offs_t[:, None] * sdxt + offs_c[None, :], dx.to(dx_ptr.dtype.element_ty),
                 mask=mt[:, None] & mc[None, :])


def _kernels():
    if triton is None:
        raise RuntimeError("the fused conv needs triton (pip install triton)")
    return triton, _conv_fwd_kernel, (_conv_dpre_kernel, _conv_dx_kernel)


def _cfg(C: int):
    # 16 x 128 tiles: 16 fp32 values per thread and tile at 4 warps, no register spills (ptxas, sm_90)
    bc = 128 if C >= 128 else max(16, 1 << (max(C, 1) - 1).bit_length())
    return 16, bc


class _CausalConv1dFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x_tc, weight, bias, seq_idx, act):
        triton, fwd, _ = _kernels()
        B, T, C = x_tc.shape
        W = weight.shape[-1]
        w = weight.contiguous()
        y = torch.empty_like(x_tc)
        BT, BC = _cfg(C)
        s = seq_idx if seq_idx is not None else x_tc  # placeholder pointer
        ssb = seq_idx.stride(0) if seq_idx is not None else 0
        grid = (triton.cdiv(T, BT), triton.cdiv(C, BC), B)
        fwd[grid](x_tc, w, bias if bias is not None else w, s, y, T, C, x_tc.stride(0), x_tc.stride(1),
                  y.stride(0), y.stride(1), ssb, W=W, HAS_BIAS=bias is not None, HAS_SEQ=seq_idx is not None,
                  ACT=act, BT=BT, BC=BC, num_warps=4)
        ctx.save_for_backward(x_tc, w, bias, seq_idx)
        ctx.act = act
        ctx.has_bias = bias is not None
        return y

    @staticmethod
    def backward(ctx, dy):
        triton, _, (dpre_k, dx_k) = _kernels()
        x_tc, w, bias, seq_idx = ctx.saved_tensors
        B, T, C = x_tc.shape
        W = w.shape[-1]
        dy = dy.contiguous()  # dpre below is written with dy's strides
        BT, BC = _cfg(C)
        ntb = triton.cdiv(T, BT)
        tiles = 16 if ntb >= 64 else 1  # tokens per program in the dweight reduction: 256 at full size
        npart = triton.cdiv(ntb, tiles)
        WP = 1 << (W - 1).bit_length()
        dp = torch.empty(B, T, C, device=x_tc.device, dtype=x_tc.dtype) if ctx.act else dy
        dx = torch.empty_like(x_tc)
        dw_part = torch.empty(B * npart, C, WP, device=x_tc.device, dtype=torch.float32)
        db_part = torch.empty(B * npart, C, device=x_tc.device, dtype=torch.float32)
        s = seq_idx if seq_idx is not None else x_tc
        ssb = seq_idx.stride(0) if seq_idx is not None else 0
        dpre_k[(npart, triton.cdiv(C, BC), B)](
            x_tc, w, bias if bias is not None else w, s, dy, dp, dw_part, db_part, T, C, npart,
            x_tc.stride(0), x_tc.stride(1), dy.stride(0), dy.stride(1), ssb,
            W=W, WP=WP, HAS_BIAS=ctx.has_bias, HAS_SEQ=seq_idx is not None, ACT=ctx.act, BT=BT, BC=BC,
            TILES=tiles, num_warps=4)
        grid = (ntb, triton.cdiv(C, BC), B)
        dx_k[grid](w, s, dp, dx, T, C, dp.stride(0), dp.stride(1), dx.stride(0), dx.stride(1), ssb,
                   W=W, HAS_SEQ=seq_idx is not None, BT=BT, BC=BC, num_warps=4)
        dw = dw_part.sum(0)[:, :W].to(w.dtype)
        db = db_part.sum(0).to(bias.dtype) if ctx.has_bias else None
        return dx, dw, db, None, None


def causal_conv1d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                  activation: str | None = None, seq_idx: torch.Tensor | None = None) -> torch.Tensor:
    """Fused depthwise causal conv: x [B, C, T], weight [C, W] -> [B, C, T] (a view of a [B, T, C] buffer).

    seq_idx: [B, T] or [T] (B == 1) document ids; taps never cross a change of id. Differentiable in x,
    weight and bias. activation: None or 'silu'/'swish'.
    """
    if activation not in (None, "silu", "swish"):
        raise ValueError(f"unsupported conv activation {activation!r}")
    B, C, T = x.shape
    if weight.dim() == 3:
        weight = weight.squeeze(1)
    x_tc = x.transpose(1, 2)
    if x_tc.stride(-1) != 1:
        x_tc = x_tc.contiguous()
    x_tc = x_tc.to(x.dtype)
    if seq_idx is not None:
        seq_idx = seq_idx.reshape(-1, T)
        if seq_idx.shape[0] != B:
            seq_idx = seq_idx.expand(B, T)
        seq_idx = seq_idx.to(device=x.device, dtype=torch.int32)
        if seq_idx.stride(-1) != 1:
            seq_idx = seq_idx.contiguous()
    y = _CausalConv1dFn.apply(x_tc, weight, bias, seq_idx, activation is not None)
    return y.transpose(1, 2)
