"""Pure-PyTorch chunked gated delta rule (the CPU path): WY/UT form, vectorised over chunks.

Intra-chunk work (the (I + A)^-1 solve, w, u, the q·k block) runs for all chunks at once; only the
[K, V] state recurrence loops over chunks. Autograd goes through torch. Computes in fp32 (fp64 for
fp64 inputs). Same signature as :func:`naive_recurrent_gated_delta_rule`.
"""

from __future__ import annotations

import torch

from .naive import _check, l2norm

__all__ = ["torch_chunk_gated_delta_rule"]


def _pack(x: torch.Tensor, idx: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    # x [1, T, ...] -> [N, Lp, ...] with zeros in the padding
    y = x[0][idx]
    shape = valid.shape + (1,) * (y.dim() - 2)
    return y * valid.view(shape).to(y.dtype)


def torch_chunk_gated_delta_rule(
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
    chunk_size: int = 64,
    **_unused,
):
    B, T, H, K, HV, V = _check(q, k, v, g, beta, cu_seqlens)
    scale = K**-0.5 if scale is None else scale
    C = chunk_size
    cdt = torch.float64 if q.dtype == torch.float64 else torch.float32
    G = HV // H
    dev = q.device
    qf, kf = q.to(cdt), k.to(cdt)
    if use_qk_l2norm_in_kernel:
        qf, kf = l2norm(qf), l2norm(kf)
    vf, gf, bf = v.to(cdt), g.to(cdt), beta.to(cdt)

    if cu_seqlens is None:
        N, Tp = B, max(1, -(-T // C)) * C
        pad = Tp - T

        def pack(x):
            return torch.nn.functional.pad(x, (0, 0) * (x.dim() - 2) + (0, pad)) if pad else x

        def unpack(o):
            return o[:, :T]
    else:
        cs = cu_seqlens.tolist()
        N = len(cs) - 1
        lens = [cs[i + 1] - cs[i] for i in range(N)]
        Tp = max(1, -(-max(lens + [1]) // C)) * C
        ar = torch.arange(Tp, device=dev)
        starts = torch.tensor(cs[:-1], device=dev)
        lens_t = torch.tensor(lens, device=dev)
        valid = ar[None, :] < lens_t[:, None]
        idx = torch.where(valid, starts[:, None] + ar[None, :], torch.zeros_like(ar)[None, :])

        def pack(x):
            return _pack(x, idx, valid)

        def unpack(o):
            return o[valid].unsqueeze(0)

    NT = Tp // C
    if initial_state is not None and initial_state.shape != (N, HV, K, V):
        raise ValueError(f"initial_state must be {(N, HV, K, V)}, got {tuple(initial_state.shape)}")

    def chunks(x, d):  # [N, Tp, HV, d] -> [N, HV, NT, C, d]
        return x.reshape(N, NT, C, HV, d).permute(0, 3, 1, 2, 4)

    qc = chunks(pack(qf.repeat_interleave(G, dim=2)), K)
    kc = chunks(pack(kf.repeat_interleave(G, dim=2)), K)
    vc = chunks(pack(vf), V)
    gc = pack(gf).reshape(N, NT, C, HV).permute(0, 3, 1, 2).cumsum(-1)  # [N, HV, NT, C]
    bc = pack(bf).reshape(N, NT, C, HV).permute(0, 3, 1, 2)

    ii = torch.arange(C, device=dev)
    lower_strict = ii[:, None] > ii[None, :]
    lower = ii[:, None] >= ii[None, :]
    diff = gc[..., :, None] - gc[..., None, :]
    decay = torch.where(lower, diff, torch.full_like(diff, -float("inf"))).exp()  # 0 above diagonal

    kk = kc @ kc.transpose(-1, -2)
    A = (bc[..., None] * kk * decay).masked_fill(~lower_strict, 0)
    eye = torch.eye(C, dtype=cdt, device=dev)
    egc = gc.exp()[..., None]
    rhs = torch.cat([bc[..., None] * egc * kc, bc[..., None] * vc], dim=-1)
    wu = torch.linalg.solve_triangular(eye + A, rhs, upper=False, unitriangular=True)
    w, u = wu[..., :K], wu[..., K:]

    Aqk = (qc @ kc.transpose(-1, -2)) * decay  # includes the diagonal
    qg = qc * egc
    gL = gc[..., -1:]  # [N, HV, NT, 1]
    kdec = kc * (gL - gc).exp()[..., None]
    eL = gL.exp()[..., None]  # [N, HV, NT, 1, 1]

    h = (
        initial_state.to(cdt)
        if initial_state is not None
        else torch.zeros(N, HV, K, V, dtype=cdt, device=dev)
    )
    hs, deltas = [], []
    for c in range(NT):
        hs.append(h)
        d = u[:, :, c] - w[:, :, c] @ h
        deltas.append(d)
        h = h * eL[:, :, c] + kdec[:, :, c].transpose(-1, -2) @ d
    Hs = torch.stack(hs, dim=2)  # [N, HV, NT, K, V]
    D = torch.stack(deltas, dim=2)  # [N, HV, NT, C, V]
    o = scale * (qg @ Hs + Aqk @ D)
    o = o.permute(0, 2, 3, 1, 4).reshape(N, Tp, HV, V)
    o = unpack(o).to(v.dtype)
    final = h.to(torch.float64 if cdt == torch.float64 else torch.float32) if output_final_state else None
    return o, final
