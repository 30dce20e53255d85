"""Backend switch for the GDN kernels: hpt (our Triton), fla (flash-linear-attention), torch, auto.

``get_gdn_fns(name)`` returns ``(chunk_fn, recurrent_fn)`` with flash-linear-attention's keyword
signature ``fn(q, k, v, g, beta, scale=None, initial_state=None, output_final_state=False,
cu_seqlens=None, use_qk_l2norm_in_kernel=False) -> (o, final_state)``.
"""

from __future__ import annotations

import importlib.util
import os

import torch

__all__ = ["BACKENDS", "available_backends", "backend_status", "get_gdn_fns", "resolve_backend"]

BACKENDS = ("hpt", "fla", "torch", "auto")


def triton_interpreter() -> bool:
    """TRITON_INTERPRET is on: Triton kernels run on the CPU (tests, tiny shapes)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def _hpt_reason() -> str | None:
    if importlib.util.find_spec("triton") is None:
        return "kernel backend 'hpt' is unavailable: triton is not installed (pip install triton)"
    if not (torch.cuda.is_available() or triton_interpreter()):
        return "kernel backend 'hpt' is unavailable: it needs a CUDA GPU (or TRITON_INTERPRET=1 for slow CPU runs)"
    return None


def _fla_reason() -> str | None:
    if importlib.util.find_spec("fla") is None:
        return "kernel backend 'fla' is unavailable: pip install flash-linear-attention"
    if not torch.cuda.is_available():
        return "kernel backend 'fla' is unavailable: it needs a CUDA GPU"
    return None


def backend_status() -> dict[str, str | None]:
    """name -> None when usable, else the reason it is not."""
    return {"hpt": _hpt_reason(), "fla": _fla_reason(), "torch": None, "auto": None}


def available_backends() -> list[str]:
    return [name for name, why in backend_status().items() if why is None]


def resolve_backend(name: str = "auto") -> str:
    """The concrete backend that ``name`` selects ('auto' -> 'hpt' on CUDA, else 'torch')."""
    if name not in BACKENDS:
        raise ValueError(f"unknown kernel backend {name!r}; choose one of {', '.join(BACKENDS)}")
    if name == "auto":
        return "hpt" if torch.cuda.is_available() and _hpt_reason() is None else "torch"
    return name


def get_gdn_fns(name: str = "auto"):
    """(chunk_fn, recurrent_fn) for backend ``name``; RuntimeError with the fix when unavailable."""
    name = resolve_backend(name)
    if name == "torch":
        from .torch_chunk import torch_chunk_gated_delta_rule

        return torch_chunk_gated_delta_rule, torch_chunk_gated_delta_rule
    if name == "hpt":
        why = _hpt_reason()
        if why:
            raise RuntimeError(why)
        from .chunk import chunk_gated_delta_rule
        from .fused_recurrent import fused_recurrent_gated_delta_rule

        return chunk_gated_delta_rule, fused_recurrent_gated_delta_rule
    why = _fla_reason()
    if why:
        raise RuntimeError(why)
    try:
        from fla.ops.gated_delta_rule import chunk_gated_delta_rule, fused_recurrent_gated_delta_rule
    except Exception as e:  # pragma: no cover - depends on the install
        raise RuntimeError(f"kernel backend 'fla' is unavailable: importing flash-linear-attention failed ({e})") from e
    return chunk_gated_delta_rule, fused_recurrent_gated_delta_rule
