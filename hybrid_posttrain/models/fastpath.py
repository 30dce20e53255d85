"""The training fast path for hybrid students: fused kernels and a per-layer-type checkpointing policy.

`apply_fast_path(model, ...)` switches on, for OlmoHybrid / Qwen3-Next (and Olmo3 dense) models:

* ``gdn``: the GDN recurrence on our Triton kernels (`route_hybrid_layers`, backend ``auto`` -> ``hpt``
  on CUDA), with document boundaries (``cu_seqlens``) when sequences are packed;
* ``conv``: the short causal convolution + SiLU as one boundary-aware Triton kernel
  (`kernels/conv.py`), called from `models/hybrid.py`'s routed ``causal_conv1d_fn``;
* ``gdn_layer``: the OlmoHybrid GDN layer's forward without the copies transformers makes between its
  parts (one projection for q/k/v/a/b, the conv reading it in place and writing q/k/v contiguous for the
  kernel; `_olmo_gdn_forward`);
* ``attention``: packed rows (one row of documents) attend per document without a dense [T, T] mask
  (`models/attention.py`: PyTorch's varlen flash attention on a GPU, else causal SDPA per document);
  other batches run transformers' SDPA unchanged;
* ``rope``: the attention layers' RoPE on Liger's kernel (OlmoHybrid, Olmo3; module-level routing);
* ``gated_norm``: the GDN output norm ``weight * rmsnorm(o) * silu(gate)`` as one Triton kernel
  (`kernels/norm.py`);
* ``rmsnorm``: the layer RMSNorms as one Triton kernel each (saves x and rstd, not fp32 copies);
* ``swiglu``: ``down(silu(gate(x)) * up(x))`` as one autograd function that keeps only x, gate(x) and
  up(x) and recomputes the product in the backward (Liger's SiLU-mul kernels on CUDA);
* ``fused_ce``: with ``labels`` (and gradients on), the forward returns the loss from Liger Kernel's
  fused linear + cross-entropy, which never materialises the [tokens, vocab] logits (``logits`` is None;
  without Liger, a chunked PyTorch version with the same property);
* ``checkpoint``: activation checkpointing by layer type: ``none``, ``all`` (every decoder layer),
  ``attention`` / ``gdn`` (those decoder layers only), ``mlp`` (the MLP of every layer), ``mixers``
  (the attention and GDN token mixers), or a comma list such as ``attention,mlp``.

Every patch is per instance (no class is modified), checks its input at each call and falls back to
the plain PyTorch path on a CPU tensor (unless TRITON_INTERPRET=1), on a PEFT-wrapped projection, or
on anything it does not expect. `fast_path_report(model)` gives the backend of every part.
Stages call `apply_fast_path` on CUDA by default (`stages/common.py`); `benchmarks/train_step.py`
measures it against the transformers baseline.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import types

import torch
import torch.nn.functional as F
from torch import nn

from hybrid_posttrain.kernels.gdn.backends import triton_interpreter
from hybrid_posttrain.models import hybrid
from hybrid_posttrain.models.attention import ATTN_NAME, set_packed_attention, varlen_backend

__all__ = ["apply_fast_path", "fast_path_report", "set_activation_checkpointing", "CHECKPOINT_PARTS",
           "fast_path_available", "chunked_linear_cross_entropy", "swiglu_mlp"]

CHECKPOINT_PARTS = ("none", "all", "attention", "gdn", "mlp", "mixers")
GATED_NORMS = ("OlmoHybridRMSNormGated", "Qwen3NextRMSNormGated")
PLAIN_NORMS = {"OlmoHybridRMSNorm": 0.0, "Olmo3RMSNorm": 0.0, "Qwen3NextRMSNorm": 1.0}  # name -> weight offset
MLP_NAMES = ("OlmoHybridMLP", "Olmo3MLP", "Qwen3NextMLP")
MIXER_ATTRS = ("self_attn", "linear_attn")


def _has(mod: str) -> bool:
    return importlib.util.find_spec(mod) is not None


def _kernel_ok(t: torch.Tensor) -> bool:
    """Our Triton kernels run on this tensor: CUDA with triton, or the CPU interpreter."""
    return (t.is_cuda or triton_interpreter()) and _has("triton")


def _liger_ok(t: torch.Tensor) -> bool:
    return t.is_cuda and _has("liger_kernel") and _has("triton")


def _autocast_ok(t: torch.Tensor) -> bool:
    """No autocast, or autocast to t's own dtype (bf16 weights under bf16 autocast, as in the Trainer): the
    fused functions' products then run in the dtype of the tensors they save."""
    dev = t.device.type
    return not torch.is_autocast_enabled(dev) or torch.get_autocast_dtype(dev) == t.dtype


def fast_path_available() -> bool:
    """The fused parts can run here (a CUDA GPU and triton)."""
    return torch.cuda.is_available() and _has("triton")


def _plain_linear(m: nn.Module) -> bool:
    """A bias-free nn.Linear whose weight a parent may use directly: not PEFT-wrapped, and not a DeepSpeed
    ZeRO-3 partitioned parameter (those are gathered only inside the module's own forward)."""
    return type(m) is nn.Linear and m.bias is None and not hasattr(m.weight, "ds_id")


# ---------------------------------------------------------------- norms

def _gated_norm_forward(self, hidden_states, gate):
    if _kernel_ok(hidden_states) and getattr(self, "activation", "silu") in ("silu", "swish"):
        from hybrid_posttrain.kernels.norm import gated_rmsnorm

        return gated_rmsnorm(hidden_states, gate, self.weight, self.variance_epsilon)
    return self._hpt_plain_forward(hidden_states, gate)


def _plain_norm_forward(self, hidden_states):
    if _kernel_ok(hidden_states) and hidden_states.shape[-1] == self.weight.shape[-1]:
        from hybrid_posttrain.kernels.norm import rmsnorm

        eps = getattr(self, "variance_epsilon", getattr(self, "eps", 1e-6))
        return rmsnorm(hidden_states, self.weight, eps, self._hpt_offset)
    return self._hpt_plain_forward(hidden_states)


def _patch(module: nn.Module, fn) -> bool:
    if getattr(module, "_hpt_plain_forward", None) is not None:
        return False
    module._hpt_plain_forward = module.forward
    module.forward = types.MethodType(fn, module)
    return True


def _unpatch(module: nn.Module) -> None:
    plain = getattr(module, "_hpt_plain_forward", None)
    if plain is not None:
        module.forward = plain
        del module._hpt_plain_forward


# ---------------------------------------------------------------- SwiGLU MLP

def _silu_mul(a, b):
    if _liger_ok(a):
        from liger_kernel.ops.swiglu import swiglu_forward

        return swiglu_forward(a, b)[2]
    return F.silu(a) * b


def _silu_mul_backward(a, b, dc):
    """(da, db) of c = silu(a) * b. The Liger kernel writes them over a and b (ours to overwrite)."""
    if _liger_ok(a):
        from liger_kernel.ops.swiglu import swiglu_backward

        return swiglu_backward(a, b, dc)
    af = a.float()
    s = torch.sigmoid(af)
    dcf = dc.float()
    da = dcf * b.float() * s * (1 + af * (1 - s))
    db = dcf * af * s
    return da.to(a.dtype), db.to(b.dtype)


class _SwiGLUMLPFn(torch.autograd.Function):
    """y = down(silu(x Wg^T) * (x Wu^T)); saves x, a = x Wg^T, b = x Wu^T (not the product)."""

    @staticmethod
    def forward(ctx, x, wg, wu, wd):
        x2 = x.reshape(-1, x.shape[-1])
        a = x2 @ wg.t()
        b = x2 @ wu.t()
        c = _silu_mul(a, b)
        y = c @ wd.t()
        ctx.save_for_backward(x2, a, b, wg, wu, wd)
        ctx.xshape = x.shape
        return y.view(*x.shape[:-1], wd.shape[0])

    @staticmethod
    def backward(ctx, dy):
        x2, a, b, wg, wu, wd = ctx.saved_tensors
        dy2 = dy.reshape(-1, dy.shape[-1]).to(wd.dtype)
        c = _silu_mul(a, b)
        dwd = dy2.t() @ c
        del c
        dc = dy2 @ wd
        da, db = _silu_mul_backward(a, b, dc)
        del dc
        dx = da @ wg
        dx.addmm_(db, wu)
        dwg = da.t() @ x2
        dwu = db.t() @ x2
        return dx.view(ctx.xshape), dwg, dwu, dwd


def swiglu_mlp(x, wg, wu, wd):
    """Differentiable ``down(silu(gate(x)) * up(x))`` with bias-free weights, saving x, gate(x), up(x)."""
    return _SwiGLUMLPFn.apply(x, wg, wu, wd)


def _mlp_forward(self, x):
    g, u, d = self.gate_proj, self.up_proj, self.down_proj
    plain = all(_plain_linear(m) for m in (g, u, d))
    same = g.weight.dtype == u.weight.dtype == d.weight.dtype == x.dtype
    if plain and same and _autocast_ok(x) and torch.is_grad_enabled() and getattr(self, "_hpt_silu", False):
        return swiglu_mlp(x, g.weight, u.weight, d.weight)
    return self._hpt_plain_forward(x)


# ---------------------------------------------------------------- OlmoHybrid GDN layer

GDN_LAYER_NAMES = ("OlmoHybridGatedDeltaNet",)
_GDN_PROJ = ("q_proj", "k_proj", "v_proj", "a_proj", "b_proj")


def _gdn_layer_ok(self, x, cache_params, kwargs) -> bool:
    mods = [getattr(self, n) for n in (*_GDN_PROJ, "g_proj")]
    return (cache_params is None and _kernel_ok(x) and type(self.conv1d) is nn.Conv1d
            and hybrid.fused_conv_active(x, self.conv1d.weight.shape[-1])
            and hybrid.active_backend() is not None and _autocast_ok(x)
            and all(_plain_linear(m) and m.weight.dtype == x.dtype for m in mods)
            and self.activation in ("silu", "swish") and (x.shape[0] == 1 or "cu_seq_lens_q" not in kwargs))


def _olmo_gdn_forward(self, hidden_states, cache_params=None, attention_mask=None, **kwargs):
    """OlmoHybridGatedDeltaNet.forward for training, without copies between the parts.

    transformers runs three q/k/v projections, concatenates them, transposes for the conv, slices,
    splits, and copies q, k and v contiguous again for the kernel; its backward pays each of those
    (a slice backward is a zero fill plus a copy). Here: one projection for q, k, v, a, b (weights
    concatenated, one GEMM and one weight-gradient GEMM), the fused conv reads the q/k/v columns of that
    output in place and writes q, k and v contiguous (`causal_conv1d_btc(splits=...)`), the routed GDN
    kernel takes them as they are. Same parameters, same math, same boundaries (seq_idx / cu_seqlens).
    Anything else (a cache, PEFT-wrapped projections, CPU without the interpreter) runs the original.
    """
    if not _gdn_layer_ok(self, hidden_states, cache_params, kwargs):
        return self._hpt_plain_forward(hidden_states, cache_params=cache_params, attention_mask=attention_mask,
                                       **kwargs)
    import sys

    from hybrid_posttrain.kernels.conv import causal_conv1d_btc

    hidden_states = sys.modules[type(self).__module__].apply_mask_to_padding_states(hidden_states, attention_mask)
    B, T, _ = hidden_states.shape
    kd, vd, hv = self.key_dim, self.value_dim, self.num_v_heads
    weight = torch.cat([getattr(self, n).weight for n in _GDN_PROJ])
    qkv, a, b = F.linear(hidden_states, weight).split([2 * kd + vd, hv, hv], dim=-1)
    seq_idx = hybrid.seq_idx_from_kwargs(kwargs, T, hidden_states.device) if B == 1 else None
    q, k, v = causal_conv1d_btc(qkv, self.conv1d.weight, self.conv1d.bias, self.activation, seq_idx,
                                splits=(kd, kd, vd))
    beta = b.sigmoid()
    if self.allow_neg_eigval:
        beta = beta * 2.0
    g = -self.A_log.float().exp() * F.softplus(a.float() + self.dt_bias)
    o, _ = hybrid._chunk_fn(q.view(B, T, -1, self.head_k_dim), k.view(B, T, -1, self.head_k_dim),
                            v.view(B, T, -1, self.head_v_dim), g, beta, use_qk_l2norm_in_kernel=True,
                            cu_seqlens=kwargs.get("cu_seq_lens_q"))
    gate = self.g_proj(hidden_states)
    o = self.o_norm(o.reshape(-1, self.head_v_dim), gate.reshape(-1, self.head_v_dim))
    return self.o_proj(o.reshape(B, T, -1))


# ---------------------------------------------------------------- RoPE

# modules whose attention calls a module-level `apply_rotary_pos_emb` over the whole head (no partial rotary)
ROPE_MODULES = ("transformers.models.olmo_hybrid.modeling_olmo_hybrid", "transformers.models.olmo3.modeling_olmo3")
_ROPE_ORIG: dict[str, object] = {}


def _rope_ok(t: torch.Tensor) -> bool:
    return _kernel_ok(t) and _has("liger_kernel")


def _fused_rope(orig):
    """transformers' apply_rotary_pos_emb on Liger's RoPE kernel (one pass over q and k, in place on the
    [B, T, H, D] storage, no rotate_half slices / cat and their zero-filling slice backwards)."""
    @functools.wraps(orig)
    def apply_rotary_pos_emb(q, k, cos, sin, unsqueeze_dim=1):
        if (unsqueeze_dim == 1 and q.dim() == k.dim() == 4 and cos.dim() == 3 and q.dtype == k.dtype
                and cos.shape[-1] == q.shape[-1] == k.shape[-1] and _rope_ok(q)):
            from liger_kernel.transformers.rope import liger_rotary_pos_emb

            return liger_rotary_pos_emb(q, k, cos.to(q.dtype), sin.to(q.dtype))
        return orig(q, k, cos, sin, unsqueeze_dim)

    apply_rotary_pos_emb._hpt_rope = True
    return apply_rotary_pos_emb


def set_fused_rope(on: bool) -> None:
    """Route (or restore) the module-level RoPE of the ROPE_MODULES families. It is a pure function with
    transformers' semantics, so the switch is per process, like the GDN routing in models/hybrid.py."""
    for name in ROPE_MODULES:
        try:
            mod = importlib.import_module(name)
        except ImportError:  # pragma: no cover - an older transformers without the family
            continue
        cur = mod.apply_rotary_pos_emb
        if on and not getattr(cur, "_hpt_rope", False):
            _ROPE_ORIG[name] = cur
            mod.apply_rotary_pos_emb = _fused_rope(cur)
        elif not on and getattr(cur, "_hpt_rope", False):
            mod.apply_rotary_pos_emb = _ROPE_ORIG.pop(name)


def fused_rope_active(model: nn.Module) -> bool:
    mod = importlib.import_module(type(model).__module__)
    return getattr(getattr(mod, "apply_rotary_pos_emb", None), "_hpt_rope", False)


# ---------------------------------------------------------------- fused linear + cross-entropy

def chunked_linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                                 ignore_index: int = -100, chunk: int = 2048) -> torch.Tensor:
    """Sum of token cross-entropies of ``hidden @ weight.T`` against targets, chunk by chunk.

    Each chunk's logits are recomputed in the backward (checkpointed), so at most [chunk, vocab] logits
    exist at once. The plain-PyTorch fused CE (used where Liger cannot run).
    """
    def part(h, w, t):
        return F.cross_entropy((h @ w.t()).float(), t, ignore_index=ignore_index, reduction="sum")

    total = hidden.new_zeros((), dtype=torch.float32)
    for i in range(0, hidden.shape[0], chunk):
        h, t = hidden[i:i + chunk], targets[i:i + chunk]
        if torch.is_grad_enabled():
            total = total + torch.utils.checkpoint.checkpoint(part, h, weight, t, use_reentrant=False)
        else:
            total = total + part(h, weight, t)
    return total


def _causal_lm_loss(hidden, weight, labels, shift_labels, num_items_in_batch, ignore_index=-100):
    """transformers' ForCausalLMLoss semantics (shift, mean or sum / num_items_in_batch), fused."""
    if shift_labels is None:
        shift_labels = F.pad(labels, (0, 1), value=ignore_index)[..., 1:]
    h = hidden.reshape(-1, hidden.shape[-1])
    t = shift_labels.reshape(-1).to(h.device)
    if _liger_ok(h) and h.dtype == weight.dtype and _autocast_ok(h):
        from liger_kernel.transformers.functional import liger_fused_linear_cross_entropy

        total = liger_fused_linear_cross_entropy(h, weight, t, ignore_index=ignore_index, reduction="sum")
        if isinstance(total, tuple):
            total = total[0]
    else:
        total = chunked_linear_cross_entropy(h, weight, t, ignore_index)
    denom = num_items_in_batch if num_items_in_batch is not None else (t != ignore_index).sum()
    if torch.is_tensor(denom):
        denom = denom.to(total.device)
    return total / denom


def _fused_ce_forward(model: nn.Module):
    """The fused-CE forward bound to `model`. It refers to the model only through `self` (a deepcopy, such as
    a DPO reference model, gets a forward bound to the copy); an earlier instance forward is kept in
    `_hpt_ce_inner`."""
    cls_forward = type(model).forward
    model._hpt_ce_inner = model.__dict__.get("forward")

    @functools.wraps(cls_forward)
    def forward(self, *args, labels=None, shift_labels=None, num_items_in_batch=None, **kwargs):
        lm_head = self.get_output_embeddings()
        use = ((labels is not None or shift_labels is not None) and torch.is_grad_enabled() and len(args) <= 1
               and _plain_linear(lm_head) and not kwargs.get("logits_to_keep")
               and kwargs.get("return_dict", True) is not False
               and getattr(self.config.get_text_config(), "final_logit_softcapping", None) is None)
        if not use:
            extra = {k: v for k, v in (("labels", labels), ("shift_labels", shift_labels),
                                       ("num_items_in_batch", num_items_in_batch)) if v is not None}
            inner = self.__dict__.get("_hpt_ce_inner")
            if inner is not None:
                return inner(*args, **kwargs, **extra)
            return cls_forward(self, *args, **kwargs, **extra)
        from transformers.modeling_outputs import CausalLMOutputWithPast

        kwargs.pop("logits_to_keep", None)
        out = getattr(self, self.base_model_prefix)(*args, **kwargs)
        loss = _causal_lm_loss(out.last_hidden_state, lm_head.weight, labels, shift_labels, num_items_in_batch)
        return CausalLMOutputWithPast(loss=loss, logits=None, past_key_values=out.past_key_values,
                                      hidden_states=getattr(out, "hidden_states", None),
                                      attentions=getattr(out, "attentions", None))

    forward._hpt_fused_ce = True
    return types.MethodType(forward, model)


# ---------------------------------------------------------------- activation checkpointing

def _ckpt_forward(self, *args, **kwargs):
    if self.training and torch.is_grad_enabled():
        return torch.utils.checkpoint.checkpoint(self._hpt_ckpt_inner, *args, use_reentrant=False, **kwargs)
    return self._hpt_ckpt_inner(*args, **kwargs)


def _parse_policy(policy: str) -> set[str]:
    parts = {p.strip() for p in (policy or "none").split(",") if p.strip()}
    bad = parts - set(CHECKPOINT_PARTS)
    if bad:
        raise ValueError(f"unknown checkpoint part(s) {sorted(bad)}; choose among {', '.join(CHECKPOINT_PARTS)} "
                         f"or a comma list of them")
    return parts - {"none"}


def _decoder_layers(model: nn.Module) -> list[nn.Module]:
    for m in model.modules():
        if isinstance(getattr(m, "layers", None), nn.ModuleList):
            return list(m.layers)
    return []


def set_activation_checkpointing(model: nn.Module, policy: str = "none") -> list[str]:
    """Checkpoint the modules `policy` selects (see the module docstring); returns their names.

    Replaces any earlier policy set here. Non-reentrant torch.utils.checkpoint, active in training only.
    """
    parts = _parse_policy(policy)
    names = {id(m): n for n, m in model.named_modules()}
    for m in model.modules():
        inner = getattr(m, "_hpt_ckpt_inner", None)
        if inner is not None:
            m.forward = inner
            del m._hpt_ckpt_inner
    chosen = []
    for layer in _decoder_layers(model):
        is_attn = hasattr(layer, "self_attn") and not hasattr(layer, "linear_attn")
        whole = "all" in parts or ("attention" in parts and is_attn) or ("gdn" in parts and not is_attn)
        targets = [layer] if whole else []
        if not whole:
            if "mlp" in parts and hasattr(layer, "mlp"):
                targets.append(layer.mlp)
            if "mixers" in parts:
                targets += [getattr(layer, a) for a in MIXER_ATTRS if hasattr(layer, a)]
        for t in targets:
            t._hpt_ckpt_inner = t.forward
            t.forward = types.MethodType(_ckpt_forward, t)
            chosen.append(names.get(id(t), type(t).__name__))
    return chosen


# ---------------------------------------------------------------- the switch

def apply_fast_path(model: nn.Module, *, gdn: str | None = "auto", conv: bool | str = True, gated_norm: bool = True,
                    rmsnorm: bool = True, swiglu: bool = True, fused_ce: bool = True, gdn_layer: bool = True,
                    rope: bool = True, attention: bool = True, checkpoint: str = "none") -> dict[str, str]:
    """Switch the fast path on for `model` (in place); returns `fast_path_report(model)`.

    gdn: kernel backend for the GDN layers (``auto``, ``hpt``, ``fla``, ``torch``; None leaves the current
    routing). The patches are idempotent; parts set to False are switched back to the plain path.
    """
    if gdn is not None and hybrid.gdn_layers(model):
        hybrid.route_hybrid_layers(gdn)
    hybrid.set_fused_conv(conv)
    set_fused_rope(rope)
    set_packed_attention(model, attention)
    for _, m in model.named_modules():
        name = type(m).__name__
        if name in GATED_NORMS:
            _patch(m, _gated_norm_forward) if gated_norm else _unpatch(m)
        elif name in PLAIN_NORMS:
            if rmsnorm:
                m._hpt_offset = PLAIN_NORMS[name]
                _patch(m, _plain_norm_forward)
            else:
                _unpatch(m)
        elif name in GDN_LAYER_NAMES:
            _patch(m, _olmo_gdn_forward) if gdn_layer else _unpatch(m)
        elif name in MLP_NAMES and all(hasattr(m, p) for p in ("gate_proj", "up_proj", "down_proj")):
            if swiglu:
                act = getattr(getattr(m, "config", None), "hidden_act", None)
                m._hpt_silu = act in ("silu", "swish")
                _patch(m, _mlp_forward)
            else:
                _unpatch(m)
    current = model.__dict__.get("forward")
    if fused_ce and not getattr(current, "_hpt_fused_ce", False):
        model.forward = _fused_ce_forward(model)  # wraps whatever forward the instance has now
    elif not fused_ce and getattr(current, "_hpt_fused_ce", False):
        inner = model.__dict__.pop("_hpt_ce_inner", None)
        if inner is None:
            del model.forward
        else:
            model.forward = inner
    model._hpt_checkpoint = ",".join(sorted(_parse_policy(checkpoint))) or "none"
    set_activation_checkpointing(model, checkpoint)
    return fast_path_report(model)


def fast_path_report(model: nn.Module) -> dict[str, str]:
    """Backend of every part as it would run on this model's device (on the GPU, where there is one)."""
    try:
        p = next(model.parameters())
    except StopIteration:  # pragma: no cover
        p = torch.empty(0)
    if torch.cuda.is_available() and not p.is_cuda:  # a model not yet moved: report what runs once it is on its GPU
        p = torch.empty(0, device="cuda", dtype=p.dtype)
    kern = _kernel_ok(p)
    liger = _liger_ok(p)
    mods = list(model.modules())

    def state(names, yes):
        found = [m for m in mods if type(m).__name__ in names]
        if not found:
            return "n/a"
        patched = sum(getattr(m, "_hpt_plain_forward", None) is not None for m in found)
        if patched == 0:
            return "torch (transformers)"
        return yes if patched == len(found) else f"{yes} ({patched}/{len(found)})"

    gdn = hybrid.active_backend() if hybrid.gdn_layers(model) else None
    report = {
        "gdn": (gdn or "transformers default") if hybrid.gdn_layers(model) else "n/a",
        "conv": ("n/a" if not hybrid.gdn_layers(model) else
                 "triton fused, boundary-aware" if hybrid.fused_conv_active(p) else
                 "torch, boundary-aware" if gdn else "transformers default"),
        "gdn_layer": state(GDN_LAYER_NAMES, "one q/k/v/a/b projection, no copies" if kern and hybrid.fused_conv_active(p)
                           else "transformers (cpu fallback)"),
        "attention": (f"packed: {varlen_backend(p)}" if getattr(model.config, "_attn_implementation", None) == ATTN_NAME
                      else str(getattr(model.config, "_attn_implementation", "n/a"))),
        "rope": ("liger" if _rope_ok(p) else "transformers (cpu fallback)") if fused_rope_active(model)
        else "transformers",
        "gated_norm": state(GATED_NORMS, "triton fused" if kern else "torch (cpu fallback)"),
        "rmsnorm": state(tuple(PLAIN_NORMS), "triton fused" if kern else "torch (cpu fallback)"),
        "swiglu": state(MLP_NAMES, "recompute-product (liger silu-mul)" if liger else "recompute-product (torch)"),
        "fused_ce": ("liger fused linear+CE" if liger else "chunked torch linear+CE")
        if getattr(model.__dict__.get("forward"), "_hpt_fused_ce", False) else "full logits (transformers)",
        "checkpoint": getattr(model, "_hpt_checkpoint", "none"),
        "packing": ("transformers default" if not gdn else
                    "boundary-aware (conv seq_idx + GDN cu_seqlens; packed rows' GDN on the torch kernel: HPT_GDN_VARLEN=torch)"
                    if gdn == "hpt" and not hybrid.packed_rows_on_hpt() else
                    "boundary-aware (conv seq_idx + GDN cu_seqlens)"),
    }
    return report
