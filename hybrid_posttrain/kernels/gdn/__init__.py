"""Gated DeltaNet (gated delta rule) kernels, standalone (no other hybrid_posttrain imports).

Public functions share flash-linear-attention's keyword signature
``fn(q, k, v, g, beta, scale=None, initial_state=None, output_final_state=False, cu_seqlens=None,
use_qk_l2norm_in_kernel=False) -> (o, final_state)``:

- ``naive_recurrent_gated_delta_rule``: token-by-token reference (any dtype, fp64 included).
- ``torch_chunk_gated_delta_rule``: pure-PyTorch chunked form (CPU path, autograd through torch).
- ``chunk_gated_delta_rule``: Triton chunked forward and backward (needs triton; CUDA or TRITON_INTERPRET=1).
- ``fused_recurrent_gated_delta_rule``: Triton decode on an fp32 state (in place optional).

Triton is imported lazily, so importing this package works without it.
"""

from __future__ import annotations

from .backends import BACKENDS, available_backends, backend_status, get_gdn_fns, resolve_backend
from .naive import l2norm, naive_chunk_gated_delta_rule, naive_recurrent_gated_delta_rule
from .torch_chunk import torch_chunk_gated_delta_rule

__all__ = [
    "BACKENDS",
    "available_backends",
    "backend_status",
    "chunk_gated_delta_rule",
    "fused_recurrent_gated_delta_rule",
    "get_gdn_fns",
    "l2norm",
    "naive_chunk_gated_delta_rule",
    "naive_recurrent_gated_delta_rule",
    "resolve_backend",
    "torch_chunk_gated_delta_rule",
]


def chunk_gated_delta_rule(*args, **kwargs):
    """Triton chunked gated delta rule (forward and backward); see :mod:`.chunk`."""
    from .chunk import chunk_gated_delta_rule as fn

    return fn(*args, **kwargs)


def fused_recurrent_gated_delta_rule(*args, **kwargs):
    """Triton fused recurrent (decode) gated delta rule; see :mod:`.fused_recurrent`."""
    from .fused_recurrent import fused_recurrent_gated_delta_rule as fn

    return fn(*args, **kwargs)
