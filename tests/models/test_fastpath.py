"""The training fast path (models/fastpath.py) against the plain transformers path, on a CPU.

Triton kernels run in the interpreter (TRITON_INTERPRET=1, set here before triton is imported) on the
tiny hybrid preset. Each fused part must give the plain model's loss and every parameter's gradient,
with packed documents; checkpointing policies must not change them and must keep fewer activations.
"""

from __future__ import annotations

import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import copy  # noqa: E402
import importlib.util  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

# the kernels' jit functions are created now, at collection, under the interpreter
from hybrid_posttrain.kernels import conv as _conv  # noqa: E402,F401
from hybrid_posttrain.models import fastpath, hybrid, load_model  # noqa: E402

pytestmark = pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton not installed")


@pytest.fixture(scope="module")
def base():
    torch.set_num_threads(1)
    model, _ = load_model("tiny-hybrid", dtype="float32", kernels="torch", seed=0, with_tokenizer=False)
    model.config.use_cache = False
    return model


@pytest.fixture(autouse=True)
def _restore_conv():
    yield
    hybrid.set_fused_conv(True)
    fastpath.set_fused_rope(False)


def packed_batch(vocab=1024, lens=(13, 7, 20), seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(6, vocab, (1, sum(lens)), generator=g)
    pos = torch.cat([torch.arange(n) for n in lens])[None]
    labels = ids.clone()
    labels[0, 0] = -100
    return dict(input_ids=ids, position_ids=pos, labels=labels)


def loss_and_grads(model, batch, conv=False, **extra):
    hybrid.set_fused_conv(conv)  # the conv switch is global (models/hybrid.py)
    model.train()
    model.zero_grad(set_to_none=True)
    out = model(**batch, **extra)
    out.loss.backward()
    return out, {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


def assert_same(plain, fast, tol):
    (po, pg), (fo, fg) = plain, fast
    assert abs(po.loss.item() - fo.loss.item()) < tol * abs(po.loss.item())
    assert pg.keys() == fg.keys() and len(pg) > 0
    for n in pg:
        assert rel(fg[n], pg[n]) < tol, n


def test_every_part_matches_plain_model(base, monkeypatch):
    splits = []
    fused = _conv.causal_conv1d_btc
    monkeypatch.setattr(_conv, "causal_conv1d_btc", lambda *a, **k: splits.append(k.get("splits")) or fused(*a, **k))
    plain = copy.deepcopy(base)
    fast = copy.deepcopy(base)
    report = fastpath.apply_fast_path(fast, gdn="torch", conv="always")
    assert report["gated_norm"] == "triton fused" and report["rmsnorm"] == "triton fused"
    assert report["conv"].startswith("triton fused") and report["fused_ce"] == "chunked torch linear+CE"
    assert report["gdn_layer"] == "one q/k/v/a/b projection, no copies" and report["rope"] == "liger"
    assert report["attention"] == "packed: sdpa per document"
    # every norm / MLP instance is patched, the model class is untouched
    assert all(getattr(m, "_hpt_plain_forward", None) is not None for m in fast.modules()
               if type(m).__name__ in fastpath.GATED_NORMS + tuple(fastpath.PLAIN_NORMS) + fastpath.MLP_NAMES
               + fastpath.GDN_LAYER_NAMES)
    assert "forward" not in plain.__dict__
    batch = packed_batch()
    p = loss_and_grads(plain, batch)
    f = loss_and_grads(fast, batch, conv="always")
    assert f[0].logits is None and p[0].logits is not None  # the fused CE never builds the logits
    # every GDN layer ran the copy-free forward: conv straight to contiguous q, k, v
    kd, vd = base.config.linear_key_head_dim * base.config.linear_num_key_heads, base.config.linear_value_head_dim * \
        base.config.linear_num_value_heads
    assert splits == [(kd, kd, vd)] * base.config.layer_types.count("linear_attention")
    assert_same(p, f, 2e-4)


def test_fused_ce_reduction_matches_transformers(base):
    plain = copy.deepcopy(base)
    fast = copy.deepcopy(base)
    fastpath.apply_fast_path(fast, gdn="torch", conv=False, gated_norm=False, rmsnorm=False, swiglu=False)
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(6, 1024, (2, 17), generator=g)
    labels = ids.clone()
    labels[:, :5] = -100
    batch = dict(input_ids=ids, labels=labels)
    # sum / num_items_in_batch (gradient accumulation) as well as the mean
    assert_same(loss_and_grads(plain, batch, num_items_in_batch=40), loss_and_grads(fast, batch, num_items_in_batch=40),
                1e-5)
    assert_same(loss_and_grads(plain, batch), loss_and_grads(fast, batch), 1e-5)
    # without gradients (eval) the forward keeps the logits
    with torch.no_grad():
        out = fast(**batch)
    assert out.logits is not None and out.logits.shape == (2, 17, 1024)


def test_liger_fused_linear_cross_entropy_matches_plain():
    """The CUDA path's loss (Liger's fused linear + CE), run in the Triton interpreter."""
    pytest.importorskip("liger_kernel")
    from liger_kernel.transformers.functional import liger_fused_linear_cross_entropy

    g = torch.Generator().manual_seed(0)
    h = torch.randn(2, 9, 16, generator=g, requires_grad=True)
    w = torch.randn(50, 16, generator=g, requires_grad=True)
    labels = torch.randint(0, 50, (2, 9), generator=g)
    labels[0, 3] = -100
    t = torch.nn.functional.pad(labels, (0, 1), value=-100)[..., 1:].reshape(-1)
    got = liger_fused_linear_cross_entropy(h.reshape(-1, 16), w, t, reduction="sum")
    got = (got[0] if isinstance(got, tuple) else got) / (t != -100).sum()
    ref = torch.nn.functional.cross_entropy((h.reshape(-1, 16) @ w.t()), t, ignore_index=-100)
    assert abs(got.item() - ref.item()) < 1e-5
    for a, b in zip(torch.autograd.grad(got, [h, w]), torch.autograd.grad(ref, [h, w]), strict=False):
        assert rel(a, b) < 1e-5
    chunked = fastpath.chunked_linear_cross_entropy(h.reshape(-1, 16), w, t, chunk=5) / (t != -100).sum()
    assert abs(chunked.item() - ref.item()) < 1e-5


def test_swiglu_mlp_matches_plain():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 5, 16, generator=g, requires_grad=True)
    wg, wu = torch.randn(40, 16, generator=g, requires_grad=True), torch.randn(40, 16, generator=g, requires_grad=True)
    wd = torch.randn(16, 40, generator=g, requires_grad=True)
    y = fastpath.swiglu_mlp(x, wg, wu, wd)
    ref = (torch.nn.functional.silu(x @ wg.t()) * (x @ wu.t())) @ wd.t()
    assert rel(y, ref) < 1e-6
    dy = torch.randn_like(y)
    for a, b in zip(torch.autograd.grad(y, [x, wg, wu, wd], dy), torch.autograd.grad(ref, [x, wg, wu, wd], dy), strict=False):
        assert rel(a, b) < 1e-5


def saved_bytes(model, batch):
    total = 0

    def pack(t):
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    hybrid.set_fused_conv(False)
    model.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(**batch)
    out.loss.backward()
    return total


@pytest.mark.parametrize("policy", ["all", "attention", "gdn", "mlp", "mixers", "attention,mlp"])
def test_checkpoint_policies_keep_results_and_save_memory(base, policy):
    plain = copy.deepcopy(base)
    fast = copy.deepcopy(base)
    fastpath.apply_fast_path(plain, gdn="torch", conv=False, gated_norm=False, rmsnorm=False, swiglu=False,
                             fused_ce=False, gdn_layer=False, rope=False, attention=False)
    chosen = fastpath.set_activation_checkpointing(fast, policy)
    layer_types = base.config.layer_types
    expect = {"all": 4, "attention": layer_types.count("full_attention"),
              "gdn": layer_types.count("linear_attention"), "mlp": 4, "mixers": 4,
              "attention,mlp": layer_types.count("full_attention") + layer_types.count("linear_attention")}[policy]
    assert len(chosen) == expect
    if policy == "mlp":
        assert all(n.endswith(".mlp") for n in chosen)
    batch = packed_batch(seed=2)
    assert_same(loss_and_grads(plain, batch), loss_and_grads(fast, batch), 1e-5)
    assert saved_bytes(fast, batch) < saved_bytes(plain, batch)
    fastpath.set_activation_checkpointing(fast, "none")
    assert saved_bytes(fast, batch) == saved_bytes(plain, batch)


def test_bad_policy_is_refused(base):
    with pytest.raises(ValueError, match="unknown checkpoint part"):
        fastpath.set_activation_checkpointing(copy.deepcopy(base), "gdn,everything")


def test_parts_switch_back_off(base):
    m = copy.deepcopy(base)
    fastpath.apply_fast_path(m, gdn="torch")
    r = fastpath.apply_fast_path(m, gdn="torch", conv=False, gated_norm=False, rmsnorm=False, swiglu=False,
                                 fused_ce=False, gdn_layer=False, rope=False, attention=False)
    assert r["gated_norm"] == r["rmsnorm"] == r["swiglu"] == "torch (transformers)"
    assert r["fused_ce"] == "full logits (transformers)" and r["conv"] == "torch, boundary-aware"
    assert r["rope"] == "transformers" and r["attention"] == "sdpa"
    assert "forward" not in m.__dict__


def test_deepcopy_runs_the_copy(base):
    """A deep copy (a DPO reference model) runs its own weights, not the original's."""
    fast = copy.deepcopy(base)
    fastpath.apply_fast_path(fast, gdn="torch", conv=False)
    ref = copy.deepcopy(fast)
    with torch.no_grad():
        for p in ref.parameters():
            p.mul_(0.5)
    batch = packed_batch(seed=4)
    a, _ = loss_and_grads(fast, batch)
    b, _ = loss_and_grads(ref, batch)
    c, _ = loss_and_grads(copy.deepcopy(ref), batch)
    assert a.loss.item() != b.loss.item()
    assert b.loss.item() == c.loss.item()


def test_stage_hook_applies_layer_policy(base):
    """stages/common.py: trainer_kwargs + peft_config switch on the recipe's per-layer checkpoint policy."""
    from hybrid_posttrain.recipe import Optim, Peft
    from hybrid_posttrain.stages import common

    model = copy.deepcopy(base)
    optim = Optim(gradient_checkpointing=True, checkpoint_layers="gdn")
    kw = common.trainer_kwargs(optim, "/tmp/unused", 0)
    assert kw["gradient_checkpointing"] is False  # ours, not transformers' whole-model checkpointing
    assert common.peft_config(Peft(), model) is None
    assert not any(hasattr(m, "_hpt_ckpt_inner") for m in model.modules())
    loss_and_grads(model, packed_batch())
    chosen = [m for m in model.modules() if hasattr(m, "_hpt_ckpt_inner")]
    assert len(chosen) == base.config.layer_types.count("linear_attention")
    assert common.trainer_kwargs(Optim(gradient_checkpointing=True), "/tmp/unused", 0)["gradient_checkpointing"]
    with pytest.raises(ValueError, match="checkpoint_layers"):
        Optim(checkpoint_layers="gdn,attn")


def test_bench_step_smoke_runs_without_trl(repo):
    """benchmarks/train_step.py: the CPU plumbing check runs end to end and never imports TRL."""
    import subprocess
    import sys

    code = (
        "import runpy, sys\n"
        f"ns = runpy.run_path({str(repo / 'benchmarks' / 'train_step.py')!r}, run_name='bench')\n"
        "rc = ns['main'](['--smoke', '--seq', '64', '--batch', '2', '--steps', '3', '--warmup', '1', '--long', '128',"
        " '--packed-doc-len', '16', '--variants', 'mlp'])\n"
        "print('TRL_IMPORTED', 'trl' in sys.modules)\n"
        "sys.exit(rc)\n"
    )
    env = dict(os.environ, TRITON_INTERPRET="0")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env,
                         cwd=repo)
    assert out.returncode == 0, out.stderr[-2000:]
    text = out.stdout
    assert "## Training step" in text and "## Backends" in text and "## Long context" in text
    assert "-> PASS" in text  # the fast path's losses and grad norms follow the baseline's
    assert "ours ckpt=mlp" in text and "ours packed" in text
    assert "TRL_IMPORTED False" in text


def test_mlp_takes_the_plain_path_under_autocast():
    from transformers.models.olmo_hybrid.modeling_olmo_hybrid import OlmoHybridMLP

    cfg = type("C", (), {"hidden_size": 16, "intermediate_size": 32, "hidden_act": "silu"})()
    mlp = OlmoHybridMLP(cfg)
    mlp.config = cfg
    mlp._hpt_silu = True
    fastpath._patch(mlp, fastpath._mlp_forward)
    x = torch.randn(3, 16, requires_grad=True)
    seen = []
    orig = fastpath._SwiGLUMLPFn.apply
    fastpath._SwiGLUMLPFn.apply = lambda *a: seen.append(1) or orig(*a)
    try:
        mlp(x).sum().backward()
        assert seen == [1]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mlp(x).float().sum().backward()
        assert seen == [1]  # not taken under autocast to another dtype than the weights'
        mlp.bfloat16()
        xb = x.detach().bfloat16().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mlp(xb).float().sum().backward()
        assert seen == [1, 1]  # taken: bf16 weights under bf16 autocast
    finally:
        fastpath._SwiGLUMLPFn.apply = orig


def test_packed_attention_skips_the_dense_mask(base):
    """models/attention.py: a packed row attends per document (same values and gradients as SDPA over
    transformers' block-diagonal mask); a padded batch of two rows still goes through SDPA with its mask."""
    from hybrid_posttrain.models import attention

    plain = copy.deepcopy(base)
    fast = copy.deepcopy(base)
    assert attention.set_packed_attention(fast, True) == attention.ATTN_NAME
    seen = []
    orig = attention._per_document
    attention._per_document = lambda *a: seen.append(a[3]) or orig(*a)
    try:
        batch = packed_batch(lens=(9, 16, 4, 11), seed=7)
        assert_same(loss_and_grads(plain, batch), loss_and_grads(fast, batch), 1e-5)
        assert seen and seen[0] == [0, 9, 25, 29, 40]
        seen.clear()
        ids = torch.randint(6, 1024, (2, 12), generator=torch.Generator().manual_seed(1))
        mask = torch.ones(2, 12, dtype=torch.long)
        mask[1, :5] = 0  # left padding
        labels = ids.masked_fill(mask == 0, -100)
        padded = dict(input_ids=ids, attention_mask=mask, labels=labels)
        assert_same(loss_and_grads(plain, padded), loss_and_grads(fast, padded), 1e-5)
        assert not seen
    finally:
        attention._per_document = orig
    assert attention.set_packed_attention(fast, False) == "sdpa"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="varlen flash attention needs a GPU")
def test_varlen_flash_matches_per_document_sdpa():
    from hybrid_posttrain.models import attention

    g = torch.Generator(device="cuda").manual_seed(0)
    cu = torch.tensor([0, 100, 357, 358, 1000], device="cuda", dtype=torch.int32)
    q, k, v = (torch.randn(1, 4, 1000, 64, device="cuda", generator=g, dtype=torch.bfloat16).requires_grad_()
               for _ in range(3))
    assert attention.varlen_backend(q) == "torch varlen flash"

    class M(torch.nn.Module):
        is_causal = True

    out, _ = attention.packed_attention_forward(M(), q, k, v, None, scaling=0.125, cu_seq_lens_q=cu)
    ref = attention._per_document(q.float(), k.float(), v.float(), cu.tolist(), 0.125).transpose(1, 2)
    assert (out.float() - ref).abs().max() < 2e-2
    dq, = torch.autograd.grad(out.float().square().sum(), [q])
    dq_ref, = torch.autograd.grad(ref.square().sum(), [q])
    assert ((dq.float() - dq_ref).norm() / dq_ref.norm()) < 2e-2


def test_partitioned_or_wrapped_weights_take_the_plain_path(base, monkeypatch):
    """A ZeRO-3 partitioned weight (gathered only inside its own module's forward) or a PEFT-wrapped
    projection must not be read by a parent's fused forward: the GDN layer and MLP fall back."""
    fast = copy.deepcopy(base)
    fastpath.apply_fast_path(fast, gdn="torch", conv="always")
    calls = []
    fused = _conv.causal_conv1d_btc
    monkeypatch.setattr(_conv, "causal_conv1d_btc", lambda *a, **k: calls.append(k.get("splits")) or fused(*a, **k))
    mlp_calls = []
    monkeypatch.setattr(fastpath, "swiglu_mlp", lambda *a: mlp_calls.append(1) or fastpath._SwiGLUMLPFn.apply(*a))
    batch = packed_batch(seed=5)
    ref = loss_and_grads(fast, batch, conv="always")
    n_gdn = base.config.layer_types.count("linear_attention")
    assert calls.count(None) == 0 and len(calls) == n_gdn and len(mlp_calls) == len(fast.model.layers)
    calls.clear()
    mlp_calls.clear()
    for layer in fast.model.layers:
        for lin in (getattr(layer, "linear_attn", None) and layer.linear_attn.k_proj, layer.mlp.up_proj):
            if lin is not None:
                lin.weight.ds_id = 7  # what DeepSpeed ZeRO-3 puts on its partitioned parameters
    got = loss_and_grads(fast, batch, conv="always")
    assert calls == [None] * n_gdn and mlp_calls == []  # the conv came through transformers' own layer code
    assert_same(ref, got, 1e-4)


def test_routed_rope_matches_transformers():
    """The `rope` part: Liger's RoPE kernel (interpreter on a CPU) against transformers' formula, values and
    gradients, with q and k as the attention passes them (transposed views of [B, T, H, D])."""
    from transformers.models.olmo_hybrid import modeling_olmo_hybrid as mod

    plain = mod.apply_rotary_pos_emb
    fastpath.set_fused_rope(True)
    assert mod.apply_rotary_pos_emb is not plain and fastpath._ROPE_ORIG
    g = torch.Generator().manual_seed(0)
    B, H, T, D = 2, 3, 7, 16
    ang = torch.randn(B, T, D // 2, generator=g)
    cos, sin = torch.cat([ang, ang], -1).cos(), torch.cat([ang, ang], -1).sin()
    q0 = torch.randn(B, T, H, D, generator=g)
    k0 = torch.randn(B, T, H, D, generator=g)
    assert fastpath._rope_ok(q0)  # Liger is installed and runs here (the interpreter): the kernel is what is compared
    res = []
    for fn in (plain, mod.apply_rotary_pos_emb):
        q = q0.clone().requires_grad_()
        k = k0.clone().requires_grad_()
        a, b = fn(q.mul(1).transpose(1, 2), k.mul(1).transpose(1, 2), cos, sin)
        loss = (a * torch.arange(D)).sum() + (b ** 2).sum()
        res.append((a.detach(), b.detach(), *torch.autograd.grad(loss, [q, k])))
    for x, y in zip(*res, strict=True):
        assert rel(x, y) < 1e-6
    fastpath.set_fused_rope(False)
    assert mod.apply_rotary_pos_emb is plain
