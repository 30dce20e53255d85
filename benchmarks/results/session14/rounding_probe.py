"""Which bf16 rounding in the chunked forward costs accuracy on nearly parallel keys (session 14, CPU, fp64).

The chunked forward (WY form, chunks of 64) in fp64, with bf16 rounding applied at chosen points: the operands of
w = T (beta exp(gc) k) and u = T (beta v) (T and the scaled k / v), w and u as stored, h where the products read
it, delta as stored, and the [64, 64] q k^T block of the output. Relative error of o to the token-by-token fp64
recurrence, on the inputs of `.gdnx/f16gpu.py` (bf16-rounded, L2-normalised keys).

    PYTHONPATH=$PWD python benchmarks/results/session14/rounding_probe.py
"""

from __future__ import annotations

import sys

import torch

sys.path.insert(0, "tests/kernels")
from test_gdn import make_inputs  # noqa: E402

from hybrid_posttrain.kernels.gdn import naive_recurrent_gated_delta_rule as naive  # noqa: E402


def bf(x, on):
    return x.to(torch.bfloat16).double() if on else x


def chunked(q, k, v, g, beta, r):
    """Forward only, one sequence, fp64; r: the set of rounding points that are on."""
    _, T, H, K = q.shape
    HV, V = v.shape[2], v.shape[3]
    G = HV // H
    q = torch.nn.functional.normalize(q[0].double(), dim=-1).repeat_interleave(G, 1)
    k = torch.nn.functional.normalize(k[0].double(), dim=-1).repeat_interleave(G, 1)
    v, g, beta = v[0].double(), g[0].double(), beta[0].double()
    scale = K ** -0.5
    o = torch.zeros(T, HV, V, dtype=torch.float64)
    for hv in range(HV):
        h = torch.zeros(K, V, dtype=torch.float64)
        for c0 in range(0, T, 64):
            sl = slice(c0, min(c0 + 64, T))
            kc, qc, vc, bc = k[sl, hv], q[sl, hv], v[sl, hv], beta[sl, hv]
            gc = g[sl, hv].cumsum(0)
            n = kc.shape[0]
            low = torch.tril(torch.ones(n, n, dtype=torch.bool), -1)
            dec = (gc[:, None] - gc[None, :]).masked_fill(~torch.tril(torch.ones(n, n, dtype=torch.bool)), -1e9).exp()
            A = (bc[:, None] * (kc @ kc.T) * dec).masked_fill(~low, 0)
            Tm = torch.linalg.inv(torch.eye(n, dtype=torch.float64) + A)
            w = bf(Tm * (bc * gc.exp())[None, :], "wu_ops" in r) @ bf(kc, "wu_ops" in r)
            u = bf(Tm * bc[None, :], "wu_ops" in r) @ bf(vc, "wu_ops" in r)
            w, u = bf(w, "wu" in r), bf(u, "wu" in r)
            hb = bf(h, "h" in r)
            d = bf(u - w @ hb, "delta" in r)
            Aqk = bf((qc @ kc.T) * dec * scale, "qk" in r)
            o[sl, hv] = scale * (qc * gc.exp()[:, None]) @ hb + Aqk @ d
            kd = kc * (gc[-1] - gc).exp()[:, None]
            h = h * gc[-1].exp() + kd.T @ d
    return o


def main():
    H, HV, K, V = 1, 1, 96, 192
    T = 256
    for case in ("random", "parallel"):
        xs = make_inputs(1, T, H, HV, K, V, torch.float32, seed=7)
        if case == "parallel":
            gen = torch.Generator(device="cpu").manual_seed(8)
            base = torch.randn(1, 1, H, K, generator=gen)
            xs[1] = (base + 0.05 * torch.randn(1, T, H, K, generator=gen)).to(xs[1])
            xs[4] = (1.9 + 0.1 * torch.rand(1, T, HV, generator=gen)).to(xs[4])
            xs[3] = torch.full_like(xs[3], -0.01)
        x = [t.to(torch.bfloat16).double() if i in (0, 1, 2, 4) else t.double() for i, t in enumerate(xs[:5])]
        ref, _ = naive(*x, use_qk_l2norm_in_kernel=True)
        ref = ref[0]
        points = ("wu_ops", "wu", "h", "delta", "qk")
        for on in [()] + [(p,) for p in points] + [points, points[1:], points[2:]]:
            o = chunked(*x, set(on))
            err = ((o - ref).norm() / ref.norm()).item()
            print(f"{case:9s} rounded at {','.join(on) or 'nothing':30s} o rel err {err:.2e}", flush=True)


if __name__ == "__main__":
    main()
