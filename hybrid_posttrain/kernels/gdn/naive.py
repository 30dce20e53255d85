"""Reference gated delta rule: the recurrence, token by token, in the inputs' dtype (fp64 works).

Layout (flash-linear-attention's): q, k [B, T, H, K]; v [B, T, HV, V]; g, beta [B, T, HV];
state [N, HV, K, V] where N = B, or the number of sequences when ``cu_seqlens`` is given (then B = 1).
HV must be a multiple of H; value head ``hv`` reads query/key head ``hv // (HV // H)``.

Per value head, with state S [K, V]:
    S = S * exp(g_t)
    S = S + k_t ⊗ (beta_t * (v_t - S^T k_t))
    o_t = scale * S^T q_t
"""

from __future__ import annotations

import torch

__all__ = ["naive_recurrent_gated_delta_rule", "naive_chunk_gated_delta_rule", "l2norm"]


def l2norm(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """x / sqrt(sum(x^2) + eps) over the last dim (computed in at least fp32)."""
    xf = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
    return (xf * torch.rsqrt((xf * xf).sum(-1, keepdim=True) + eps)).to(x.dtype)


def _check(q, k, v, g, beta, cu_seqlens):
    B, T, H, K = q.shape
    HV, V = v.shape[2], v.shape[3]
    if k.shape != q.shape:
        raise ValueError(f"k {tuple(k.shape)} must match q {tuple(q.shape)}")
    if v.shape[:2] != (B, T) or g.shape != (B, T, HV) or beta.shape != (B, T, HV):
        raise ValueError("v must be [B,T,HV,V], g and beta [B,T,HV]")
    if HV % H != 0:
        raise ValueError(f"value heads {HV} must be a multiple of q/k heads {H}")
    if cu_seqlens is not None and B != 1:
        raise ValueError("cu_seqlens needs B == 1 (sequences packed along T)")
    return B, T, H, K, HV, V


def naive_recurrent_gated_delta_rule(
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
    **_unused,
):
    """Token-by-token reference. Computes in ``float32`` for half inputs, else in the inputs' dtype.

    Returns (o [B,T,HV,V] in v.dtype, final_state [N,HV,K,V] or None). Differentiable through torch.
    """
    B, T, H, K, HV, V = _check(q, k, v, g, beta, cu_seqlens)
    scale = K**-0.5 if scale is None else scale
    cdt = torch.float32 if q.dtype in (torch.float16, torch.bfloat16) else q.dtype
    G = HV // H
    qf, kf = q.to(cdt), k.to(cdt)
    if use_qk_l2norm_in_kernel:
        qf, kf = l2norm(qf), l2norm(kf)
    qf = qf.repeat_interleave(G, dim=2)
    kf = kf.repeat_interleave(G, dim=2)
    vf, gf, bf = v.to(cdt), g.to(cdt), beta.to(cdt)
    if cu_seqlens is None:
        bounds = [(b, 0, T) for b in range(B)]
    else:
        cs = cu_seqlens.tolist()
        bounds = [(0, cs[i], cs[i + 1]) for i in range(len(cs) - 1)]
    N = len(bounds)
    if initial_state is not None and initial_state.shape != (N, HV, K, V):
        raise ValueError(f"initial_state must be {(N, HV, K, V)}, got {tuple(initial_state.shape)}")
    outs = [[None] * T for _ in range(B)]
    finals = []
    for n, (b, bos, eos) in enumerate(bounds):
        S = (
            initial_state[n].to(cdt)
            if initial_state is not None
            else torch.zeros(HV, K, V, dtype=cdt, device=q.device)
        )
        for t in range(bos, eos):
            S = S * gf[b, t].exp()[:, None, None]
            kt = kf[b, t]  # [HV, K]
            pred = torch.einsum("hkv,hk->hv", S, kt)
            d = bf[b, t][:, None] * (vf[b, t] - pred)
            S = S + kt[:, :, None] * d[:, None, :]
            outs[b][t] = scale * torch.einsum("hkv,hk->hv", S, qf[b, t])
        finals.append(S)
    zero = torch.zeros(HV, V, dtype=cdt, device=q.device)
    o = torch.stack([torch.stack([x if x is not None else zero for x in row]) for row in outs]) if T else vf.new_zeros(B, 0, HV, V)
    final = torch.stack(finals).float() if output_final_state else None
    if output_final_state and cdt == torch.float64:
        final = torch.stack(finals)
    return o.to(v.dtype), final


def naive_chunk_gated_delta_rule(*args, **kwargs):
    """Alias with the chunked signature: the same function as the recurrence."""
    return naive_recurrent_gated_delta_rule(*args, **kwargs)
