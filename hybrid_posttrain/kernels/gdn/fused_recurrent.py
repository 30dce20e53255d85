"""Fused recurrent gated delta rule in Triton: decode (one or a few tokens) on an fp32 state.

One program per (sequence, value head, block of the value dim) keeps its [K, BV] slice of the state in
registers, walks the tokens, and writes the final state (in place into ``initial_state`` when
``inplace_final_state=True``). Forward only: under autograd it defers to the chunked function.
Same signature as :func:`chunk_gated_delta_rule` (plus ``inplace_final_state``).
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from hybrid_posttrain.kernels._host import cdiv as _cdiv
from hybrid_posttrain.kernels._host import np2 as _np2
from hybrid_posttrain.kernels._launch import launch

from .chunk import _seq_prog

__all__ = ["fused_recurrent_gated_delta_rule"]


def _bounds(B: int, T: int, device: torch.device) -> torch.Tensor:
    """[0, T, 2T, ..., B T] (int32) on device: the sequence bounds of a [B, T] batch."""
    return torch.arange(0, B + 1, dtype=torch.int32, device=device) * T


@functools.lru_cache(maxsize=32)
def _even_cu(B: int, T: int, device: torch.device) -> torch.Tensor:
    """`_bounds`, made once per shape: an arange and a product were two more kernel launches in every decode step of
    every layer. Only read."""
    return _bounds(B, T, device)


def _capturing(x: torch.Tensor) -> bool:
    """Whether x's stream is being captured into a CUDA graph. There, kernels do not run, and memory comes from the
    graph's pool: bounds made then would hold nothing until a replay and could be freed with the graph, so the
    remembered ones (`_even_cu`) are neither made nor cached while capturing."""
    return x.is_cuda and torch.cuda.is_current_stream_capturing()


def _empty(*shape, dtype, device):
    from . import chunk  # the POISON switch lives there

    x = torch.empty(*shape, dtype=dtype, device=device)
    if chunk.POISON:
        x.fill_(float("nan"))
    return x


@triton.jit
def _fused_recurrent_fwd(
    q, k, v, g, beta, h0, ht, o, cu, scale,
    H: tl.constexpr, HV: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
    BK: tl.constexpr, BV: tl.constexpr, L2: tl.constexpr, HAS_H0: tl.constexpr, STORE_HT: tl.constexpr,
):
    i_v, i_nh, i_hv, i_h, bos, eos, _ = _seq_prog(cu, H, HV)
    ck = tl.arange(0, BK)
    cv = i_v * BV + tl.arange(0, BV)
    m_k = ck < K
    m_v = cv < V
    m_kv = m_k[:, None] & m_v[None, :]
    s_off = i_nh.to(tl.int64) * K * V + ck[:, None] * V + cv[None, :]
    if HAS_H0:
        h = tl.load(h0 + s_off, mask=m_kv, other=0.0).to(tl.float32)
    else:
        h = tl.zeros([BK, BV], dtype=tl.float32)
    for t in range(bos, eos):
        b_q = tl.load(q + (t * H + i_h) * K + ck, mask=m_k, other=0.0).to(tl.float32)
        b_k = tl.load(k + (t * H + i_h) * K + ck, mask=m_k, other=0.0).to(tl.float32)
        b_v = tl.load(v + (t * HV + i_hv) * V + cv, mask=m_v, other=0.0).to(tl.float32)
        b_g = tl.load(g + t * HV + i_hv).to(tl.float32)
        b_b = tl.load(beta + t * HV + i_hv).to(tl.float32)
        if L2:
            b_q = b_q * tl.rsqrt(tl.sum(b_q * b_q, 0) + 1e-6)
            b_k = b_k * tl.rsqrt(tl.sum(b_k * b_k, 0) + 1e-6)
        h = h * tl.exp(b_g)
        d = b_b * (b_v - tl.sum(h * b_k[:, None], 0))
        h = h + b_k[:, None] * d[None, :]
        b_o = tl.sum(h * b_q[:, None], 0) * scale
        tl.store(o + (t * HV + i_hv) * V + cv, b_o.to(o.dtype.element_ty), mask=m_v)
    if STORE_HT:
        tl.store(ht + s_off, h, mask=m_kv)


def fused_recurrent_gated_delta_rule(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    beta: torch.Tensor,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    cu_seqlens: torch.Tensor | None = None,
    use_qk_l2norm_in_kernel: bool = False,
    inplace_final_state: bool = False,
    **_unused,
):
    """Token-by-token gated delta rule for decode. Returns (o [B,T,HV,V], final state fp32 or None).

    With ``inplace_final_state=True`` the final state is written into ``initial_state`` (which must
    then be a contiguous fp32 tensor) and that tensor is returned.
    """
    B, T, H, K = q.shape
    HV, V = v.shape[2], v.shape[3]
    if k.shape != q.shape or v.shape[:2] != (B, T) or g.shape != (B, T, HV) or beta.shape != (B, T, HV):
        raise ValueError("expected q,k [B,T,H,K], v [B,T,HV,V], g,beta [B,T,HV]")
    if HV % H:
        raise ValueError(f"value heads {HV} must be a multiple of q/k heads {H}")
    if torch.is_grad_enabled() and any(
        x is not None and x.requires_grad for x in (q, k, v, g, beta, initial_state)
    ):
        from .chunk import chunk_gated_delta_rule

        return chunk_gated_delta_rule(q, k, v, g, beta, scale=scale, initial_state=initial_state,
                                      output_final_state=output_final_state, cu_seqlens=cu_seqlens,
                                      use_qk_l2norm_in_kernel=use_qk_l2norm_in_kernel)
    if cu_seqlens is not None:
        if B != 1:
            raise ValueError("cu_seqlens needs B == 1 (sequences packed along T)")
        cu = cu_seqlens.to(device=q.device, dtype=torch.int32).contiguous()
        N = cu.numel() - 1
    else:
        cu = _bounds(B, T, q.device) if _capturing(q) else _even_cu(B, T, q.device)
        N = B
    if initial_state is not None and tuple(initial_state.shape) != (N, HV, K, V):
        raise ValueError(f"initial_state must be {(N, HV, K, V)}, got {tuple(initial_state.shape)}")
    scale = K**-0.5 if scale is None else float(scale)
    h0 = None
    if initial_state is not None:
        h0 = initial_state
        if inplace_final_state:
            if h0.dtype != torch.float32 or not h0.is_contiguous():
                raise ValueError("inplace_final_state needs a contiguous fp32 initial_state")
        else:
            h0 = h0.float().contiguous()
    store = output_final_state or (inplace_final_state and h0 is not None)
    if store:
        ht = h0 if (inplace_final_state and h0 is not None) else _empty(
            N, HV, K, V, dtype=torch.float32, device=q.device)
    else:
        ht = None
    qc, kc = q.reshape(B * T, H, K).contiguous(), k.reshape(B * T, H, K).contiguous()
    vc = v.reshape(B * T, HV, V).contiguous()
    gcn, bc = g.reshape(B * T, HV).contiguous(), beta.reshape(B * T, HV).contiguous()
    o = _empty(B * T, HV, V, dtype=v.dtype, device=q.device)
    BK = max(16, _np2(K))
    BV = min(32, max(16, _np2(V)))
    dummy = o
    launch(_fused_recurrent_fwd, (_cdiv(V, BV), N * HV),
        qc, kc, vc, gcn, bc, h0 if h0 is not None else dummy, ht if ht is not None else dummy, o, cu, scale,
        H=H, HV=HV, K=K, V=V, BK=BK, BV=BV, L2=bool(use_qk_l2norm_in_kernel), HAS_H0=h0 is not None,
        STORE_HT=ht is not None, num_warps=4)
    return o.view(B, T, HV, V), (ht if output_final_state or inplace_final_state else None)
