"""Packing invariant on tiny-hybrid: a packed batch == the same documents run one by one (loss and grads).

The boundaries (cu_seqlens / seq_idx derived from position_ids) must reach every GDN layer and its short
convolution. The check is shown to catch a leak: with transformers' own functions (boundaries ignored)
the packed result differs.
"""

import pytest
import torch
import torch.nn.functional as F

from hybrid_posttrain.models import load_model
from hybrid_posttrain.models.hybrid import route_hybrid_layers, unroute_hybrid_layers

LENGTHS = (9, 17, 6, 12)


def _docs(vocab: int):
    g = torch.Generator().manual_seed(0)
    return [torch.randint(10, vocab, (n,), generator=g) for n in LENGTHS]


def _doc_loss(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits[:-1].float(), ids[1:], reduction="sum")


def _packed_loss_and_grads(model, docs, pass_position_ids_only: bool):
    model.zero_grad()
    ids = torch.cat(docs)[None]
    pos = torch.cat([torch.arange(len(d)) for d in docs])[None]
    kwargs = {"position_ids": pos}
    if not pass_position_ids_only:  # what TRL's padding-free collator passes
        cu = torch.tensor([0, *torch.tensor(LENGTHS).cumsum(0).tolist()], dtype=torch.int32)
        kwargs.update(cu_seq_lens_q=cu, cu_seq_lens_k=cu, max_length_q=max(LENGTHS), max_length_k=max(LENGTHS),
                      seq_idx=torch.repeat_interleave(torch.arange(len(LENGTHS)), torch.tensor(LENGTHS))[None])
    logits = model(input_ids=ids, use_cache=False, **kwargs).logits[0]
    loss = sum(_doc_loss(chunk, d) for chunk, d in zip(logits.split(LENGTHS), docs))
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


def _separate_loss_and_grads(model, docs):
    model.zero_grad()
    loss = sum(_doc_loss(model(input_ids=d[None], use_cache=False).logits[0], d) for d in docs)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


def _max_rel(a: dict, b: dict) -> float:
    return max(((a[n] - b[n]).norm() / (b[n].norm() + 1e-12)).item() for n in b)


@pytest.mark.parametrize("position_ids_only", [False, True])
def test_packed_equals_separate(position_ids_only):
    torch.manual_seed(0)
    model, _ = load_model("tiny-hybrid", dtype="float32", kernels="torch", with_tokenizer=False)
    docs = _docs(model.config.vocab_size)
    sep_loss, sep_grads = _separate_loss_and_grads(model, docs)
    pk_loss, pk_grads = _packed_loss_and_grads(model, docs, position_ids_only)
    assert torch.allclose(pk_loss, sep_loss, rtol=1e-5, atol=1e-4), (pk_loss, sep_loss)
    assert _max_rel(pk_grads, sep_grads) < 1e-4
    # every GDN parameter got a gradient, so the comparison covered the recurrent path
    gdn = [n for n in sep_grads if "linear_attn" in n]
    assert gdn and all(sep_grads[n].abs().sum() > 0 for n in gdn)


def test_check_catches_a_leak_without_boundaries():
    torch.manual_seed(0)
    model, _ = load_model("tiny-hybrid", dtype="float32", kernels="torch", with_tokenizer=False)
    docs = _docs(model.config.vocab_size)
    sep_loss, sep_grads = _separate_loss_and_grads(model, docs)
    unroute_hybrid_layers()
    try:
        model._hpt_boundary_hook.remove()  # transformers alone: position_ids only, no boundaries for GDN
        model._hpt_boundary_hook = None
        pk_loss, pk_grads = _packed_loss_and_grads(model, docs, pass_position_ids_only=True)
    finally:
        route_hybrid_layers("torch")
    assert not torch.allclose(pk_loss, sep_loss, rtol=1e-5, atol=1e-4), (pk_loss, sep_loss)
    assert _max_rel(pk_grads, sep_grads) > 1e-2


def test_boundary_conv_matches_per_document_conv():
    from hybrid_posttrain.models.hybrid import boundary_causal_conv1d

    torch.manual_seed(1)
    c, w = 6, 4
    weight, bias = torch.randn(c, w), torch.randn(c)
    xs = [torch.randn(1, c, n) for n in (3, 8, 1, 5)]
    seq_idx = torch.cat([torch.full((x.shape[-1],), i) for i, x in enumerate(xs)])
    packed = boundary_causal_conv1d(torch.cat(xs, -1), weight, bias, "silu", seq_idx)
    sep = torch.cat([boundary_causal_conv1d(x, weight, bias, "silu") for x in xs], -1)
    assert torch.allclose(packed, sep, atol=1e-6)
    leaky = boundary_causal_conv1d(torch.cat(xs, -1), weight, bias, "silu")
    assert not torch.allclose(leaky, sep, atol=1e-3)


QWEN3_NEXT_TINY = dict(vocab_size=1024, hidden_size=64, intermediate_size=128, moe_intermediate_size=32,
                       shared_expert_intermediate_size=32, num_hidden_layers=4, num_attention_heads=4,
                       num_key_value_heads=2, head_dim=16, linear_num_key_heads=2, linear_num_value_heads=4,
                       linear_key_head_dim=16, linear_value_head_dim=16, num_experts=4, num_experts_per_tok=2)


def test_qwen3_next_packed_equals_separate_and_leaks_without_routing():
    """The same invariant for the Qwen3-Next GDN layer (grouped value heads, fused projections, MoE)."""
    torch.manual_seed(0)
    model, _ = load_model("qwen3-next-80b-a3b", QWEN3_NEXT_TINY, dtype="float32", kernels="torch",
                          with_tokenizer=False)
    docs = _docs(model.config.vocab_size)
    sep_loss, sep_grads = _separate_loss_and_grads(model, docs)
    pk_loss, pk_grads = _packed_loss_and_grads(model, docs, pass_position_ids_only=True)
    assert torch.allclose(pk_loss, sep_loss, rtol=1e-5, atol=1e-4), (pk_loss, sep_loss)
    assert _max_rel(pk_grads, sep_grads) < 1e-4
    unroute_hybrid_layers()
    try:
        model._hpt_boundary_hook.remove()
        model._hpt_boundary_hook = None
        leak_loss, _ = _packed_loss_and_grads(model, docs, pass_position_ids_only=True)
    finally:
        route_hybrid_layers("torch")
    assert not torch.allclose(leak_loss, sep_loss, rtol=1e-5, atol=1e-4)


def test_qwen3_next_packed_attention_keeps_the_invariant():
    """The fast path's per-document attention (models/attention.py) on Qwen3-Next: grouped kv heads (4 query,
    2 kv), gated attention output; packed == separate still holds, and the per-document path did run."""
    from hybrid_posttrain.models import attention

    torch.manual_seed(0)
    model, _ = load_model("qwen3-next-80b-a3b", QWEN3_NEXT_TINY, dtype="float32", kernels="torch",
                          with_tokenizer=False)
    assert attention.set_packed_attention(model, True) == attention.ATTN_NAME
    seen = []
    orig = attention._per_document
    attention._per_document = lambda *a: seen.append(a[3]) or orig(*a)
    try:
        docs = _docs(model.config.vocab_size)
        sep_loss, sep_grads = _separate_loss_and_grads(model, docs)
        assert not seen  # one document per call: transformers' SDPA
        pk_loss, pk_grads = _packed_loss_and_grads(model, docs, pass_position_ids_only=True)
    finally:
        attention._per_document = orig
    assert seen and seen[0][-1] == sum(len(d) for d in docs)
    assert torch.allclose(pk_loss, sep_loss, rtol=1e-5, atol=1e-4), (pk_loss, sep_loss)
    assert _max_rel(pk_grads, sep_grads) < 1e-4


def test_gpu_backend_on_cpu_tensors_runs_the_torch_kernel(monkeypatch):
    """A model still on the CPU (before the Trainer moves it) under a GPU backend (hpt / fla routed because
    CUDA exists) must not hand CPU tensors to the GPU kernels: the routed function falls back to torch."""
    from hybrid_posttrain.kernels.gdn.torch_chunk import torch_chunk_gated_delta_rule
    from hybrid_posttrain.models import hybrid

    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.setitem(hybrid._STATE, "backend", "hpt")
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(1, 20, 2, 8, generator=g), torch.randn(1, 20, 2, 8, generator=g)
    v = torch.randn(1, 20, 2, 8, generator=g)
    gl = -torch.rand(1, 20, 2, generator=g)
    beta = torch.rand(1, 20, 2, generator=g)
    cu = torch.tensor([0, 7, 20])
    o, _ = hybrid._chunk_fn(q, k, v, gl, beta, use_qk_l2norm_in_kernel=True, cu_seqlens=cu)
    ref, _ = torch_chunk_gated_delta_rule(q=q, k=k, v=v, g=gl, beta=beta, cu_seqlens=cu, use_qk_l2norm_in_kernel=True)
    assert torch.allclose(o, ref)


def test_packed_rows_on_the_gpu_routing(monkeypatch):
    """GPU calls with document boundaries run hpt (its packed-row NaN is fixed and confirmed on the H100);
    HPT_GDN_VARLEN=torch sends them to the torch kernel; CPU tensors never reach the GPU kernels. (A
    stand-in object with is_cuda=True plays the GPU tensor.)"""
    from hybrid_posttrain.models import hybrid

    class Cuda:
        is_cuda = True

    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.delenv("HPT_GDN_VARLEN", raising=False)
    monkeypatch.setattr("hybrid_posttrain.kernels.gdn.backends.resolve_backend", lambda b: b)
    cu = torch.tensor([0, 5, 9])
    assert hybrid.chunk_backend("hpt", Cuda(), cu) == "hpt"
    assert hybrid.chunk_backend("hpt", Cuda(), None) == "hpt"
    assert hybrid.chunk_backend("fla", Cuda(), cu) == "fla"
    assert hybrid.chunk_backend("hpt", torch.zeros(1), None) == "torch"  # CPU tensor, no interpreter
    monkeypatch.setenv("HPT_GDN_VARLEN", "torch")
    assert hybrid.chunk_backend("hpt", Cuda(), cu) == "torch"
    assert hybrid.chunk_backend("hpt", Cuda(), None) == "hpt"
    from hybrid_posttrain.errors import UserError

    monkeypatch.setenv("HPT_GDN_VARLEN", "Torch")  # a typo is an error, not silently the default
    with pytest.raises(UserError, match="expected hpt"):
        hybrid.chunk_backend("hpt", Cuda(), cu)
