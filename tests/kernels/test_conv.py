"""Fused boundary-aware short causal conv (+SiLU) against its plain-PyTorch reference.

CPU: Triton runs in its interpreter (tests/kernels/conftest.py sets TRITON_INTERPRET=1) at tiny shapes.
Checks output, dx, dweight, dbias, with and without document boundaries, and that no tap crosses a
boundary (changing one document's inputs leaves the others' outputs bit-identical).
"""

from __future__ import annotations

import importlib.util

import pytest
import torch

from hybrid_posttrain.kernels.conv import causal_conv1d, causal_conv1d_ref, seq_idx_from_cu_seqlens
from hybrid_posttrain.models.hybrid import boundary_causal_conv1d

pytestmark = pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton not installed")
DEV = "cuda" if torch.cuda.is_available() else "cpu"


def rel(a, b):
    a, b = a.double(), b.double()
    assert torch.isfinite(a).all()
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def _inputs(B, C, T, W, seed, bias=True):
    g = torch.Generator().manual_seed(seed)
    # channel-last storage like transformers' projections: [B, T, C] viewed as [B, C, T]
    x = torch.randn(B, T, C, generator=g).to(DEV).transpose(1, 2).requires_grad_()
    w = torch.randn(C, W, generator=g).mul(0.5).to(DEV).requires_grad_()
    b = torch.randn(C, generator=g).to(DEV).requires_grad_() if bias else None
    return x, w, b


@pytest.mark.parametrize("B,C,T,W,act,bias,docs", [
    (2, 24, 37, 4, "silu", True, None),
    (1, 40, 70, 4, "silu", False, [0, 5, 6, 33, 70]),
    (1, 16, 19, 3, None, True, [0, 1, 2, 19]),
    (2, 130, 9, 4, "silu", True, "batch"),
    (1, 16, 1030, 4, "silu", True, [0, 500, 501, 1030]),  # long enough for the multi-tile dweight reduction
])
def test_matches_reference(B, C, T, W, act, bias, docs):
    x, w, b = _inputs(B, C, T, W, seed=T + C)
    if docs == "batch":
        seq_idx = torch.tensor([[0] * 4 + [1] * 5, [0] * 7 + [1] * 2], device=DEV)
    elif docs is not None:
        seq_idx = seq_idx_from_cu_seqlens(torch.tensor(docs, device=DEV), T)[None]
    else:
        seq_idx = None
    out = causal_conv1d(x, w, b, act, seq_idx)
    ref = causal_conv1d_ref(x, w, b, act, seq_idx)
    assert out.shape == ref.shape == x.shape
    assert rel(out, ref) < 1e-5
    dy = torch.randn_like(out)
    got = torch.autograd.grad(out, [x, w] + ([b] if bias else []), dy)
    want = torch.autograd.grad(ref, [x, w] + ([b] if bias else []), dy)
    for a, r in zip(got, want, strict=False):
        assert a.shape == r.shape
        assert rel(a, r) < 1e-5


def test_no_tap_crosses_a_boundary():
    x, w, b = _inputs(1, 8, 20, 4, seed=3)
    seq_idx = seq_idx_from_cu_seqlens(torch.tensor([0, 9, 20], device=DEV), 20)
    out = causal_conv1d(x.detach(), w.detach(), b.detach(), "silu", seq_idx)
    x2 = x.detach().clone()
    x2[:, :, :9] = torch.randn(1, 8, 9, device=DEV) * 10  # change the first document only
    out2 = causal_conv1d(x2, w.detach(), b.detach(), "silu", seq_idx)
    assert torch.equal(out[:, :, 9:], out2[:, :, 9:])
    assert not torch.allclose(out[:, :, :9], out2[:, :, :9])
    # and without boundaries the second document does see the first
    out3 = causal_conv1d(x2, w.detach(), b.detach(), "silu", None)
    out4 = causal_conv1d(x.detach(), w.detach(), b.detach(), "silu", None)
    assert not torch.allclose(out3[:, :, 9:12], out4[:, :, 9:12])


def test_reference_agrees_with_hybrid_plain_path():
    """The kernel's reference and models/hybrid.py's boundary conv are the same function."""
    x, w, b = _inputs(1, 12, 30, 4, seed=5)
    seq_idx = seq_idx_from_cu_seqlens(torch.tensor([0, 11, 12, 30], device=DEV), 30)
    a = causal_conv1d_ref(x.detach(), w.detach(), b.detach(), "silu", seq_idx)
    r = boundary_causal_conv1d(x.detach(), w.detach(), b.detach(), "silu", seq_idx)
    assert rel(a, r) < 1e-6


def test_bf16_close_to_fp32():
    x, w, b = _inputs(2, 32, 40, 4, seed=9)
    out = causal_conv1d(x.detach().bfloat16(), w.detach().bfloat16(), None, "silu")
    ref = causal_conv1d_ref(x.detach(), w.detach(), None, "silu")
    assert out.dtype == torch.bfloat16
    assert rel(out.float(), ref) < 1e-2


@pytest.mark.parametrize("splits,docs,act,used", [
    ((8, 8, 24), [0, 3, 20, 33], "silu", (0, 1, 2)),
    ((8, 8, 24), None, "silu", (0, 2)),          # k unused: its gradient is None
    ((40,), [0, 17, 33], None, (0,)),
    ((24, 16), None, "silu", (1,)),
])
def test_btc_slice_in_split_out(splits, docs, act, used):
    """Column slice of a wider projection in, contiguous q/k/v out (what the GDN layer fast path feeds):
    same values and gradients as the reference on the same channels, and the input is read in place."""
    from hybrid_posttrain.kernels.conv import causal_conv1d_btc

    B, T, C, W = (1 if docs else 2), 33, sum(splits), 4
    g = torch.Generator().manual_seed(C + len(used))
    proj = torch.randn(B, T, C + 13, generator=g).to(DEV).requires_grad_()  # 13 extra columns (gate, a, b)
    w = torch.randn(C, W, generator=g).mul(0.5).to(DEV).requires_grad_()
    x = proj[..., :C]
    assert x.stride(1) == C + 13
    seq_idx = seq_idx_from_cu_seqlens(torch.tensor(docs, device=DEV), T)[None] if docs else None
    outs = causal_conv1d_btc(x, w, None, act, seq_idx, splits=splits)
    assert len(outs) == len(splits) and all(o.is_contiguous() for o in outs)
    ref = causal_conv1d_ref(x.transpose(1, 2), w, None, act, seq_idx).transpose(1, 2)
    refs = torch.split(ref, list(splits), dim=-1)
    for o, r in zip(outs, refs, strict=True):
        assert o.shape == r.shape and rel(o, r) < 1e-5
    dys = [torch.randn(o.shape, generator=g).to(DEV) for o in outs]
    loss = sum((outs[i] * dys[i]).sum() for i in used)
    loss_ref = sum((refs[i] * dys[i]).sum() for i in used)
    got = torch.autograd.grad(loss, [proj, w])
    want = torch.autograd.grad(loss_ref, [proj, w])
    for a, r in zip(got, want, strict=True):
        assert rel(a, r) < 1e-5
    assert got[0][..., C:].abs().max() == 0  # the extra columns get no gradient from the conv


def test_width_limit_is_a_clear_error():
    x, w, b = _inputs(1, 8, 10, 5, seed=1)
    with pytest.raises(ValueError, match="widths up to 4"):
        causal_conv1d(x, w, b, "silu")


def test_model_conv_wider_than_the_kernels_takes_the_torch_path(monkeypatch):
    """A model whose GDN conv is wider than 4 runs the boundary-aware torch conv instead of the fused one
    (one width rule, hybrid.fused_conv_active, for the layer conv and the fast GDN layer)."""
    from hybrid_posttrain.models import hybrid

    monkeypatch.setitem(hybrid._STATE, "fused_conv", "always")
    x, w, b = _inputs(1, 8, 10, 5, seed=1)
    assert hybrid.fused_conv_active(x, 4) and not hybrid.fused_conv_active(x, 5)
    out = hybrid._conv_fn(x, w, b, "silu")
    assert torch.equal(out, boundary_causal_conv1d(x, w, b, "silu", None))
