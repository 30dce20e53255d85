"""Fused RMSNorms in Triton, forward and backward: the gated one (GDN output norm) and the plain one.

transformers' `OlmoHybridRMSNormGated` / `Qwen3NextRMSNormGated` compute, per value head row,

    out = (weight * (x * rsqrt(mean(x^2) + eps)).to(x.dtype)) * silu(gate)

in about eight PyTorch ops, keeping fp32 copies of x, gate and the intermediates for the backward.
Here one kernel reads x and gate once and writes out; the backward reads x, gate, dy and the saved
per-row rstd once and writes dx, dgate, and per-program partial sums of dweight (reduced in fp32).
The autograd graph holds x, gate (input dtype) and rstd (fp32, one per row).

`rmsnorm` is the same kernel without the gate, for the layer norms (fp32 math like OlmoHybridRMSNorm,
optional +1 weight offset like Qwen3NextRMSNorm): it saves x and rstd instead of three fp32 copies.

`gated_rmsnorm_ref` / `rmsnorm_ref` are the plain-PyTorch references (the transformers formula) the tests compare against.
Triton is imported lazily at module level; on a CPU the kernels run only under TRITON_INTERPRET=1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hybrid_posttrain.kernels._host import cdiv
from hybrid_posttrain.kernels._launch import launch

__all__ = ["gated_rmsnorm", "gated_rmsnorm_ref", "rmsnorm", "rmsnorm_ref"]


def gated_rmsnorm_ref(x: torch.Tensor, gate: torch.Tensor, weight: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Reference: the transformers formula (norm before gate, SiLU gate), output in x.dtype."""
    dtype = x.dtype
    h = x.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    h = weight * h.to(dtype)
    h = h * F.silu(gate.float())
    return h.to(dtype)


try:  # triton is optional: without it only the reference runs
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover
    triton = None

if triton is not None:
    @triton.jit
    def _gnorm_fwd_kernel(x_ptr, g_ptr, w_ptr, y_ptr, r_ptr, R, N, eps, offset,
                          HAS_GATE: tl.constexpr, ROUND: tl.constexpr, BR: tl.constexpr, BN: tl.constexpr):
        pid = tl.program_id(0).to(tl.int64)
        rows = pid * BR + tl.arange(0, BR)
        cols = tl.arange(0, BN)
        mr = rows < R
        mc = cols < N
        m = mr[:, None] & mc[None, :]
        offs = rows[:, None] * N + cols[None, :]
        x = tl.load(x_ptr + offs, mask=m, other=0.0).to(tl.float32)
        w = tl.load(w_ptr + cols, mask=mc, other=0.0).to(tl.float32) + offset
        rstd = 1.0 / tl.sqrt(tl.sum(x * x, axis=1) / N + eps)
        xn = x * rstd[:, None]
        if ROUND:
            xn = xn.to(y_ptr.dtype.element_ty).to(tl.float32)  # as transformers' gated norm rounds it
        y = w[None, :] * xn
        if HAS_GATE:
            g = tl.load(g_ptr + offs, mask=m, other=0.0).to(tl.float32)
            y = y * (g * tl.sigmoid(g))
        tl.store(y_ptr + offs, y.to(y_ptr.dtype.element_ty), mask=m)
        tl.store(r_ptr + rows, rstd, mask=mr)

    @triton.jit
    def _gnorm_bwd_kernel(x_ptr, g_ptr, w_ptr, r_ptr, dy_ptr, dx_ptr, dg_ptr, dw_ptr, R, N, NPROG, offset,
                          HAS_GATE: tl.constexpr, BR: tl.constexpr, BN: tl.constexpr):
        pid = tl.program_id(0)
        cols = tl.arange(0, BN)
        mc = cols < N
        w = tl.load(w_ptr + cols, mask=mc, other=0.0).to(tl.float32) + offset
        dw = tl.zeros((BN,), dtype=tl.float32)
        nblocks = tl.cdiv(R, BR)
        for blk in range(pid, nblocks, NPROG):
            rows = (blk * BR + tl.arange(0, BR)).to(tl.int64)
            mr = rows < R
            m = mr[:, None] & mc[None, :]
            offs = rows[:, None] * N + cols[None, :]
            x = tl.load(x_ptr + offs, mask=m, other=0.0).to(tl.float32)
            dy = tl.load(dy_ptr + offs, mask=m, other=0.0).to(tl.float32)
            rstd = tl.load(r_ptr + rows, mask=mr, other=0.0)
            xn = x * rstd[:, None]
            if HAS_GATE:
                g = tl.load(g_ptr + offs, mask=m, other=0.0).to(tl.float32)
                sg = tl.sigmoid(g)
                silu = g * sg
                dw += tl.sum(dy * xn * silu, axis=0)
                dg = dy * w[None, :] * xn * sg * (1.0 + g * (1.0 - sg))
                tl.store(dg_ptr + offs, dg.to(dg_ptr.dtype.element_ty), mask=m)
                a = dy * w[None, :] * silu
            else:
                dw += tl.sum(dy * xn, axis=0)
                a = dy * w[None, :]
            c = tl.sum(a * xn, axis=1) / N
            dx = rstd[:, None] * (a - xn * c[:, None])
            tl.store(dx_ptr + offs, dx.to(dx_ptr.dtype.element_ty), mask=m)
        tl.store(dw_ptr + pid * N + cols, dw, mask=mc)


def _block(N: int) -> tuple[int, int, int]:
    """(rows per program, padded row length, warps): 2048 elements a tile at 8 warps, no register spills
    (ptxas, sm_90) at N = 192 (GDN value heads) and N = 2048 (hidden)."""
    bn = 1 << max(N - 1, 1).bit_length()
    br = max(1, min(16, 2048 // bn))
    return br, bn, 8 if br * bn >= 2048 else 4


class _RMSNormFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, gate, weight, eps, offset, round_xn):
        if triton is None:
            raise RuntimeError("the fused RMSNorm needs triton (pip install triton)")
        shape = x.shape
        N = shape[-1]
        x2 = x.reshape(-1, N).contiguous()
        g2 = gate.reshape(-1, N).contiguous() if gate is not None else None
        R = x2.shape[0]
        y = torch.empty_like(x2)
        rstd = torch.empty(R, device=x.device, dtype=torch.float32)
        BR, BN, warps = _block(N)
        launch(_gnorm_fwd_kernel, (cdiv(R, BR),), x2, g2 if g2 is not None else x2, weight, y, rstd, R, N,
                                           float(eps), float(offset), HAS_GATE=g2 is not None,
                                           ROUND=bool(round_xn), BR=BR, BN=BN, num_warps=warps)
        ctx.save_for_backward(x2, g2, weight, rstd)
        ctx.shape = shape
        ctx.offset = float(offset)
        return y.view(shape)

    @staticmethod
    def backward(ctx, dy):
        x2, g2, weight, rstd = ctx.saved_tensors
        R, N = x2.shape
        dy2 = dy.reshape(-1, N).contiguous()
        dx = torch.empty_like(x2)
        dg = torch.empty_like(g2) if g2 is not None else None
        BR, BN, warps = _block(N)
        nblocks = cdiv(R, BR)
        if x2.is_cuda:
            nprog = min(nblocks, 8 * torch.cuda.get_device_properties(x2.device).multi_processor_count)
        else:
            nprog = min(nblocks, 4)
        dw_part = torch.empty(nprog, N, device=x2.device, dtype=torch.float32)
        launch(_gnorm_bwd_kernel, (nprog,), x2, g2 if g2 is not None else x2, weight, rstd, dy2, dx,
                                    dg if dg is not None else dx, dw_part, R, N, nprog, ctx.offset,
                                    HAS_GATE=g2 is not None, BR=BR, BN=BN, num_warps=warps)
        dw = dw_part.sum(0).to(weight.dtype)
        return (dx.view(ctx.shape), dg.view(ctx.shape) if dg is not None else None, dw, None, None, None)


def gated_rmsnorm(x: torch.Tensor, gate: torch.Tensor, weight: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Fused `weight * rmsnorm(x) * silu(gate)` over the last dim; x and gate of one shape; out in x.dtype."""
    if x.shape != gate.shape:
        raise ValueError(f"x {tuple(x.shape)} and gate {tuple(gate.shape)} must have one shape")
    if gate.dtype != x.dtype:
        gate = gate.to(x.dtype)
    return _RMSNormFn.apply(x, gate, weight, eps, 0.0, True)


def rmsnorm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6, offset: float = 0.0) -> torch.Tensor:
    """Fused `(x * rsqrt(mean(x^2) + eps) * (weight + offset))` in fp32, cast to x.dtype (Olmo / Qwen3-Next)."""
    return _RMSNormFn.apply(x, None, weight, eps, offset, False)


def rmsnorm_ref(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6, offset: float = 0.0) -> torch.Tensor:
    """Reference for `rmsnorm`: the OlmoHybridRMSNorm (offset 0) / Qwen3NextRMSNorm (offset 1) formula."""
    h = x.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return (h * (weight.float() + offset)).to(x.dtype)
