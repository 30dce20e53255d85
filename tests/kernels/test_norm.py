"""Fused gated and plain RMSNorms against their plain-PyTorch references (the transformers formulas).

CPU: Triton runs in its interpreter (tests/kernels/conftest.py sets TRITON_INTERPRET=1) at tiny shapes.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch

from hybrid_posttrain.kernels.norm import gated_rmsnorm, gated_rmsnorm_ref, rmsnorm, rmsnorm_ref

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
    for a, r in zip(torch.autograd.grad(out, [x, gate, w], dy), torch.autograd.grad(ref, [x, gate, w], dy), strict=False):
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
    for a, r in zip(got, want, strict=False):
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


@pytest.mark.parametrize("offset,dtype", [(0.0, torch.float32), (1.0, torch.float32), (0.0, torch.bfloat16)])
def test_plain_rmsnorm(offset, dtype):
    g = torch.Generator().manual_seed(int(offset) + 7)
    x = (torch.randn(3, 11, 40, generator=g) * 2).to(DEV, dtype).requires_grad_()
    w = (torch.rand(40, generator=g) + 0.5).to(DEV, dtype).requires_grad_()
    out = rmsnorm(x, w, 1e-6, offset)
    ref = rmsnorm_ref(x, w, 1e-6, offset)
    tol = 1e-5 if dtype == torch.float32 else 1e-2
    assert out.dtype == dtype
    assert rel(out.float(), ref.float()) < tol
    dy = torch.randn_like(out)
    got = torch.autograd.grad(out, [x, w], dy)
    want = torch.autograd.grad(ref, [x, w], dy)
    for a, r in zip(got, want, strict=False):
        assert a.dtype == r.dtype
        assert rel(a.float(), r.float()) < (1e-4 if dtype == torch.float32 else 2e-2)


def test_rmsnorm_ref_is_the_transformers_formula():
    from transformers.models.olmo_hybrid.modeling_olmo_hybrid import OlmoHybridRMSNorm, OlmoHybridRMSNormGated

    m = OlmoHybridRMSNorm(24, eps=1e-6)
    mg = OlmoHybridRMSNormGated(24, eps=1e-5)
    with torch.no_grad():
        m.weight.uniform_(0.5, 1.5)
        mg.weight.uniform_(0.5, 1.5)
    x, gate = torch.randn(5, 24).bfloat16(), torch.randn(5, 24).bfloat16()
    m.bfloat16()
    assert torch.equal(m(x), rmsnorm_ref(x, m.weight, 1e-6))
    assert torch.equal(mg(x, gate), gated_rmsnorm_ref(x, gate, mg.weight, 1e-5))
