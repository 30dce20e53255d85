"""The hybrid patches: document boundaries to every GDN layer and its short convolution, and kernel routing.

transformers' OlmoHybrid and Qwen3-Next GDN layers call two module-level functions: `causal_conv1d_fn`
(the short convolution) and `torch_chunk_gated_delta_rule` (the recurrence). Their torch fallbacks ignore
the packed-sequence boundaries that TRL's padding-free collator passes (`cu_seq_lens_q`, `seq_idx`), so a
packed batch leaks recurrent and convolution state from one document into the next. `route_hybrid_layers`
replaces both functions, for those model families, with boundary-aware versions that dispatch to the
selected GDN kernel backend (`hpt`, `fla`, `torch`, `auto`; see `kernels/gdn/backends.py`).

`packing_supported(model)` says whether every recurrent layer of a model is one we route: stages refuse
to pack a model with recurrent layers we do not know, rather than leak.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from typing import Any

import torch
import torch.nn.functional as F

# transformers modules whose GDN layers we route, and the class names of those layers
ROUTED_MODULES = {
    "olmo_hybrid": "transformers.models.olmo_hybrid.modeling_olmo_hybrid",
    "qwen3_next": "transformers.models.qwen3_next.modeling_qwen3_next",
}
GDN_CLASS_NAMES = ("OlmoHybridGatedDeltaNet", "Qwen3NextGatedDeltaNet")
RECURRENT_HINTS = ("GatedDeltaNet", "DeltaAttention", "Mamba", "LinearAttention", "DeltaNet")

_STATE: dict[str, Any] = {"backend": None, "originals": {}, "fused_conv": True}


def seq_idx_from_kwargs(kwargs: dict, total_len: int, device) -> torch.Tensor | None:
    """Per-token document index [T] from `seq_idx` or `cu_seq_lens_q`; None when there is one document."""
    seq_idx = kwargs.get("seq_idx")
    if seq_idx is not None:
        s = seq_idx.reshape(-1).to(device)
        return s if s.numel() == total_len else None
    cu = kwargs.get("cu_seq_lens_q")
    if cu is None:
        return None
    cu = cu.to(device).long()
    if cu.numel() <= 2:
        return None
    return torch.repeat_interleave(torch.arange(cu.numel() - 1, device=device), cu.diff(), output_size=total_len)


def boundary_causal_conv1d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                           activation: str | None = None, seq_idx: torch.Tensor | None = None) -> torch.Tensor:
    """Depthwise causal conv over x [B, C, T] with weight [C, W]; taps never cross a document boundary.

    out[t] = sum_j w[W-1-j] * x[t-j] * [doc(t-j) == doc(t)]. Without boundaries it is F.conv1d.
    """
    b, c, t = x.shape
    width = weight.shape[-1]
    xw = x.to(weight.dtype)
    if seq_idx is None:
        out = F.conv1d(xw, weight.unsqueeze(1), bias, padding=width - 1, groups=c)[:, :, :t]
    else:
        out = xw * weight[:, width - 1].view(1, c, 1)
        for j in range(1, width):
            shifted = F.pad(xw, (j, 0))[:, :, :t]
            same = torch.zeros(t, dtype=torch.bool, device=x.device)
            same[j:] = seq_idx[j:] == seq_idx[:-j]
            out = out + shifted * weight[:, width - 1 - j].view(1, c, 1) * same.view(1, 1, t).to(xw.dtype)
        if bias is not None:
            out = out + bias.view(1, c, 1)
    if activation in ("silu", "swish"):
        out = F.silu(out)
    elif activation is not None:
        raise ValueError(f"unsupported conv activation {activation!r}")
    return out.to(x.dtype)


def set_fused_conv(on: bool | str) -> None:
    """Use the fused Triton conv (`kernels/conv.py`) for CUDA tensors (True, the default; see
    models/fastpath.py), never (False), or on any device ("always": CPU tests under TRITON_INTERPRET=1)."""
    _STATE["fused_conv"] = on if on == "always" else bool(on)


def fused_conv_active(t: torch.Tensor, width: int | None = None) -> bool:
    """Whether the fused conv takes this tensor (and, given, a conv of this width: the kernels are width 4)."""
    on = _STATE["fused_conv"]
    if not (bool(on) and (t.is_cuda or on == "always") and importlib.util.find_spec("triton") is not None):
        return False
    from hybrid_posttrain.kernels.conv import MAX_WIDTH

    return width is None or width <= MAX_WIDTH


def _conv_fn(hidden_states, weight, bias=None, activation=None, **kwargs):
    b, c, t = hidden_states.shape
    seq_idx = seq_idx_from_kwargs(kwargs, t, hidden_states.device) if b == 1 else None
    if fused_conv_active(hidden_states, weight.shape[-1]):
        from hybrid_posttrain.kernels.conv import causal_conv1d

        return causal_conv1d(hidden_states, weight, bias, activation, seq_idx)
    return boundary_causal_conv1d(hidden_states, weight, bias, activation, seq_idx)


def chunk_backend(backend: str, query: torch.Tensor, cu_seqlens) -> str:
    """The GDN kernel backend one call runs on, given the routed backend.

    * a CPU tensor (a model not yet on its GPU) never goes to the GPU kernels (hpt / fla) unless Triton's
      interpreter is on;
    * document boundaries (``cu_seqlens``: packed rows) on the GPU run ours. HPT_GDN_VARLEN=torch sends
      them to the torch kernel instead (an escape hatch: session 2 saw NaN gradients for packed rows with an
      earlier version of our backward, a padding row of a cut-short chunk meeting a valid one in an
      exponent; fixed, tests/kernels/test_gdn.py::test_strong_decay_with_partial_chunks_stays_finite, and
      confirmed on the H100: 6 steps of the 1.33B student on packed rows match the torch kernel,
      benchmarks/NOTES_gdn.md).
    """
    from hybrid_posttrain.kernels.gdn.backends import resolve_backend, triton_interpreter

    backend = resolve_backend(backend)
    if backend in ("hpt", "fla") and not query.is_cuda and not triton_interpreter():
        return "torch"
    if backend == "hpt" and cu_seqlens is not None and query.is_cuda and not packed_rows_on_hpt():
        return "torch"
    return backend


def packed_rows_on_hpt() -> bool:
    """Whether GPU calls with document boundaries run our kernel (yes unless HPT_GDN_VARLEN=torch)."""
    val = os.environ.get("HPT_GDN_VARLEN", "hpt")
    if val not in ("hpt", "torch"):
        from hybrid_posttrain.errors import UserError

        raise UserError(f"HPT_GDN_VARLEN={val!r}: expected hpt (the default) or torch")
    return val == "hpt"


def _chunk_fn(query, key, value, g, beta, chunk_size: int = 64, initial_state=None, output_final_state=False,
              use_qk_l2norm_in_kernel=False, cu_seqlens=None, **kwargs):
    from hybrid_posttrain.kernels.gdn.backends import get_gdn_fns

    if cu_seqlens is not None and cu_seqlens.numel() <= 2:
        cu_seqlens = None
    if cu_seqlens is not None:
        cu_seqlens = cu_seqlens.to(query.device).long()
    chunk, _ = get_gdn_fns(chunk_backend(_STATE["backend"] or "auto", query, cu_seqlens))
    o, state = chunk(q=query, k=key, v=value, g=g, beta=beta, initial_state=initial_state,
                     output_final_state=output_final_state, cu_seqlens=cu_seqlens,
                     use_qk_l2norm_in_kernel=use_qk_l2norm_in_kernel)
    return o, state


def route_hybrid_layers(backend: str = "auto") -> str:
    """Route OlmoHybrid / Qwen3-Next GDN layers (conv + recurrence) to `backend`; returns the backend used.

    Raises RuntimeError with a clear message when the backend is unavailable here.
    """
    from hybrid_posttrain.kernels.gdn.backends import get_gdn_fns, resolve_backend

    resolved = resolve_backend(backend)
    get_gdn_fns(resolved)  # raises if unavailable
    for family, modname in ROUTED_MODULES.items():
        mod = importlib.import_module(modname)
        if family not in _STATE["originals"]:
            _STATE["originals"][family] = (mod.causal_conv1d_fn, mod.torch_chunk_gated_delta_rule)
        mod.causal_conv1d_fn = _conv_fn
        mod.torch_chunk_gated_delta_rule = _chunk_fn
    _STATE["backend"] = resolved
    return resolved


def unroute_hybrid_layers() -> None:
    """Restore transformers' own functions (tests use this to show what leaks without the patch)."""
    for family, (conv, chunk) in _STATE["originals"].items():
        mod = importlib.import_module(ROUTED_MODULES[family])
        mod.causal_conv1d_fn = conv
        mod.torch_chunk_gated_delta_rule = chunk
    _STATE["originals"].clear()
    _STATE["backend"] = None


def active_backend() -> str | None:
    return _STATE["backend"]


def gdn_layers(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if type(m).__name__ in GDN_CLASS_NAMES]


def recurrent_layers(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    return [(n, m) for n, m in model.named_modules()
            if any(h in type(m).__name__ for h in RECURRENT_HINTS) and not type(m).__name__.endswith("Layer")]


def packing_supported(model: torch.nn.Module) -> tuple[bool, str]:
    """(ok, reason): packing is safe when every recurrent layer is a GDN layer we route with boundaries."""
    unknown = sorted({type(m).__name__ for _, m in recurrent_layers(model)} - set(GDN_CLASS_NAMES))
    if unknown:
        return False, (f"recurrent layers {', '.join(unknown)} cannot receive document boundaries here, so a "
                       f"packed batch would leak state between documents; set packing: false")
    if gdn_layers(model) and _STATE["backend"] is None:
        return False, "GDN layers are not routed to a boundary-aware backend (call route_hybrid_layers first)"
    return True, ""


def _boundary_pre_hook(module, args, kwargs):
    """Derive `cu_seq_lens_q` / `seq_idx` from packed `position_ids` when the caller gave only those."""
    pos = kwargs.get("position_ids")
    if pos is None or kwargs.get("cu_seq_lens_q") is not None or kwargs.get("seq_idx") is not None:
        return args, kwargs
    if pos.dim() != 2 or pos.shape[0] != 1 or kwargs.get("past_key_values") is not None:
        return args, kwargs
    starts = (pos[0] == 0).nonzero().flatten()
    if starts.numel() <= 1:
        return args, kwargs
    if starts[0] != 0:
        starts = torch.cat([starts.new_zeros(1), starts])
    cu = torch.cat([starts, starts.new_tensor([pos.shape[1]])]).to(torch.int32)
    kwargs = dict(kwargs)
    kwargs["cu_seq_lens_q"] = kwargs["cu_seq_lens_k"] = cu
    kwargs["max_length_q"] = kwargs["max_length_k"] = int(cu.diff().max())
    kwargs["seq_idx"] = torch.repeat_interleave(torch.arange(cu.numel() - 1, device=pos.device,
                                                             dtype=torch.int32), cu.diff().long())[None]
    return args, kwargs


def install_boundary_hook(model: torch.nn.Module) -> None:
    """Make packed `position_ids` alone enough: the boundaries reach every GDN layer and short conv."""
    if getattr(model, "_hpt_boundary_hook", None) is None and gdn_layers(model):
        model._hpt_boundary_hook = model.register_forward_pre_hook(_boundary_pre_hook, with_kwargs=True)
