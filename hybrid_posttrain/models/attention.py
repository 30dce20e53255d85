"""Attention over packed documents without a dense mask (the training fast path's ``attention`` part).

With packed sequences (one row of several documents, positions restarting at 0) transformers' SDPA path
builds a [T, T] block-diagonal causal mask and runs a masked SDPA kernel over all T^2 pairs: at 16K tokens of
2K-token documents that is 8x the work of the documents' own causal attention, and a 256 MB mask. Here,
registered as the attention implementation ``hpt_sdpa_varlen``:

* a packed row (batch 1, ``cu_seq_lens_q`` in the kwargs: TRL's padding-free collator, or derived from
  ``position_ids`` by models/hybrid.py's boundary hook) runs causal attention per document: PyTorch's
  variable-length flash attention (`torch.nn.attention.varlen.varlen_attn`) where this PyTorch has it and
  the tensors are on a GPU, else one causal SDPA call per document;
* anything else (padding masks, caches, several rows) is transformers' own SDPA function, unchanged.

The mask interface of the new name is transformers' SDPA mask, so every other path keeps its masks.
"""

from __future__ import annotations

import functools
import inspect

import torch
import torch.nn.functional as F

__all__ = ["ATTN_NAME", "packed_attention_forward", "register", "set_packed_attention", "varlen_backend"]

ATTN_NAME = "hpt_sdpa_varlen"


@functools.lru_cache(maxsize=1)
def _varlen_fn():
    """PyTorch's varlen attention and its causal keyword for this version (inspected once)."""
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return None, {}
    params = inspect.signature(varlen_attn).parameters
    if "is_causal" in params:
        return varlen_attn, {"is_causal": True}
    if "window_size" in params:
        return varlen_attn, {"window_size": (-1, 0)}
    return None, {}


def varlen_backend(t: torch.Tensor) -> str:
    """What a packed row on t's device and dtype runs."""
    fn, _ = _varlen_fn()
    if fn is not None and t.is_cuda and t.dtype in (torch.float16, torch.bfloat16):
        return "torch varlen flash"
    return "sdpa per document"


def _per_document(q, k, v, bounds, scale):
    outs = []
    for s, e in zip(bounds[:-1], bounds[1:], strict=False):
        if e > s:
            outs.append(F.scaled_dot_product_attention(q[:, :, s:e], k[:, :, s:e], v[:, :, s:e], is_causal=True,
                                                       scale=scale))
    return torch.cat(outs, dim=2)


def packed_attention_forward(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None,
                             is_causal=None, **kwargs):
    """transformers attention-interface signature; query [1, H, T, D], key / value [1, Hkv, T, D]."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    cu = kwargs.get("cu_seq_lens_q")
    cu_k = kwargs.get("cu_seq_lens_k")
    T = query.shape[2]
    packed = (cu is not None and query.shape[0] == 1 and key.shape[2] == T and cu.numel() > 2
              and (cu_k is None or cu_k is cu or torch.equal(cu_k, cu)) and int(cu[-1]) == T
              and (dropout == 0.0 or not module.training) and kwargs.get("softcap") is None
              and getattr(module, "is_causal", True) and kwargs.get("sliding_window") is None)
    if not packed:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    if key.shape[1] != query.shape[1]:  # grouped kv heads
        rep = query.shape[1] // key.shape[1]
        key, value = key.repeat_interleave(rep, dim=1), value.repeat_interleave(rep, dim=1)
    if varlen_backend(query) == "torch varlen flash":
        fn, causal = _varlen_fn()
        cu32 = cu.to(device=query.device, dtype=torch.int32)
        max_len = int(kwargs.get("max_length_q") or int(cu32.diff().max()))
        out = fn(query[0].transpose(0, 1), key[0].transpose(0, 1), value[0].transpose(0, 1), cu32, cu32,
                 max_len, max_len, scale=scaling, **causal)
        return out.unsqueeze(0), None
    out = _per_document(query, key, value, [int(x) for x in cu.tolist()], scaling)
    return out.transpose(1, 2).contiguous(), None


def register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(ATTN_NAME, packed_attention_forward)
    AttentionMaskInterface.register(ATTN_NAME, sdpa_mask)


def set_packed_attention(model: torch.nn.Module, on: bool) -> str:
    """Switch a model whose attention is SDPA to ``hpt_sdpa_varlen`` (on) or back (off); returns the
    implementation in use."""
    current = getattr(model.config, "_attn_implementation", None)
    if on and current == "sdpa":
        register()
        model.set_attn_implementation(ATTN_NAME)
    elif not on and current == ATTN_NAME:
        model.set_attn_implementation("sdpa")
    return model.config._attn_implementation
