"""Fused gated RMSNorm against its plain-PyTorch reference (the transformers formula).

CPU: Triton runs in its interpreter (tests/kernels/conftest.py sets TRITON_INTERPRET=1) at tiny shapes.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch

from hybrid_posttrain.kernels.norm import gated_rmsnorm, gated_rmsnorm_ref

pytestmark = pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton not installed")
DEV = "cuda" if torch.cuda.is_available() else "cpu"


def rel(a, b):
    a, b = a.double(), b.double()
    assert torch.isfinite(a).all()
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


@pytest.mark.parametrize("shape", [(3, 5, 48), (37, 24), (2, 7, 3, 192)])
def test_matches_reference_fp32(shape):
    g = torch.Generator().manual_seed(sum(shape))
    x = (torch.randn(*shape, generator=g) * 3).to(DEV).requires_grad_()
    gate = torch.randn(*shape, generator=g).to(DEV).requires_grad_()
    w = (1 + 0.1 * torch.randn(shape[-1], generator=g)).to(DEV).requires_grad_()
    out = gated_rmsnorm(x, gate, w, 1e-5)
    ref = gated_rmsnorm_ref(x, gate, w, 1e-5)
    assert out.shape == ref.shape and out.dtype == ref.dtype
    assert rel(out, ref) < 1e-5
    dy = torch.randn_like(out)
    for a, r in zip(torch.autograd.grad(out, [x, gate, w], dy), torch.autograd.grad(ref, [x, gate, w], dy)):
        assert a.shape == r.shape
        assert rel(a, r) < 1e-4


def test_bf16_inputs_fp32_weight():
    """The precision policy keeps the norm weight fp32 while x and gate are bf16."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(40, 48, generator=g).to(DEV).bfloat16().requires_grad_()
    gate = torch.randn(40, 48, generator=g).to(DEV).bfloat16().requires_grad_()
    w = torch.rand(48, generator=g).to(DEV).add(0.5).requires_grad_()
    out = gated_rmsnorm(x, gate, w)
    ref = gated_rmsnorm_ref(x, gate, w)
    assert out.dtype == torch.bfloat16
    assert rel(out.float(), ref.float()) < 1e-2
    dy = torch.randn_like(out)
    got = torch.autograd.grad(out, [x, gate, w], dy)
    want = torch.autograd.grad(ref, [x, gate, w], dy)
    assert [t.dtype for t in got] == [torch.bfloat16, torch.bfloat16, torch.float32]
    for a, r in zip(got, want):
        assert rel(a.float(), r.float()) < 2e-2


def test_rows_are_independent():
    x = torch.randn(6, 32, device=DEV)
    gate = torch.randn(6, 32, device=DEV)
    w = torch.rand(32, device=DEV)
    out = gated_rmsnorm(x, gate, w)
    x2 = x.clone()
    x2[2] *= 100
    out2 = gated_rmsnorm(x2, gate, w)
    keep = [0, 1, 3, 4, 5]
    assert torch.equal(out[keep], out2[keep])
    assert torch.allclose(out[2], out2[2], rtol=1e-4, atol=1e-6)  # a row's scale cancels in its norm
