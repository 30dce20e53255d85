"""Launching compiled Triton kernels without Triton's per-call argument binding.

`kernel[grid](*args, **kw)` binds every argument, works out its specialisation (each tensor's dtype and 16-byte
alignment, each integer's width and whether it is 1 or a multiple of 16), builds a cache key and looks the compiled
kernel up, before the C launcher runs. On the H100 machine's CPU that came to 40-55 us a launch inside a GDN
forward+backward (session 18), where the launcher itself is a fraction of it. At 2x4096 our host time then passed
the kernels' GPU time in some runs, and the wall time read the CPU (session 19, call 8).

`launch` keeps the compiled kernel Triton returned at the first launch under a key of our own: the kernel, the
launch keywords (constexprs and options), the current device, and per positional argument the same facts Triton
specialises on (`spec`). A later launch with an equal key calls the compiled kernel's launcher directly, with the
arguments in the kernel's parameter order, as `JITFunction.run` does after its lookup (Triton 3.4 through 3.9).
The key is at least as fine as Triton's, so it never picks a kernel Triton would not have picked: the GPU test
`test_fast_launch_picks_tritons_kernel` checks that for aligned and misaligned tensors and 1 / 16 / 17 / wide
integers. What the direct call skips besides the lookup: Triton's check that the module globals a kernel reads have
not changed since it was compiled (ours read constants only) and its pre-run hooks (a kernel with any takes
Triton's path).

Gluon kernels (`gdn/out_gluon.py`, `gdn/dqk_gluon.py`, `gdn/wy_gluon.py`) take the same path: their host TMA
descriptors are keyed on what Triton specialises them on (dtype, block shape, shared-memory layout), and the launcher
encodes each one as it does under `kernel[grid]`. That encoding stays: on this path a launch of the Gluon `_bwd_dqk`
(ten descriptors) cost the H100 machine's host 128-169 us with dq's zeroing, the Triton kernel's 40-57 (session 25,
call 3), so the driver keeps the Gluon kernels to launches with enough GPU work to hide it (chunk.CONFIG
`*_gluon_min`).

Anything else takes `kernel[grid](...)` every time: a first argument that is not a CUDA tensor (the CPU, where
Triton runs its interpreter), the interpreter (it returns no compiled kernel to keep), an argument of a type `spec`
does not know, a keyword value that cannot be hashed, a grid given as a function, something that is not a JIT
function or has pre-run hooks, or CONFIG `direct` off (`HPT_LAUNCH_CONFIG='{"direct": false}'`, read and checked at
import as the other kernel knobs are: `_env.env_config`; benchmarks flip CONFIG for A/B runs).
"""

from __future__ import annotations

import functools
import inspect

import torch

from hybrid_posttrain.kernels._env import env_config

CONFIG = {"direct": True}  # launches after the first call the compiled kernel directly
env_config("HPT_LAUNCH_CONFIG", CONFIG)

_CACHE: dict = {}  # key (`launch`) -> (compiled kernel, the constexpr / default values after the positional args)
_OPTIONS = frozenset({"num_warps", "num_stages", "num_ctas", "maxnreg", "enable_fp_fusion", "debug",
                      "launch_cooperative_grid", "launch_pdl"})


def spec(a):
    """What Triton specialises a positional argument on: a tensor's dtype and whether its address is a multiple of 16;
    an integer's width (int32, int64, uint64) and whether it is 1 or a multiple of 16; a float, a bool or None by
    type. None for anything else (the caller then takes Triton's own path)."""
    if isinstance(a, torch.Tensor):
        return (a.dtype, a.data_ptr() % 16 == 0)
    if isinstance(a, bool):
        return ("b", a)
    if isinstance(a, int):
        width = 32 if -(2**31) <= a < 2**31 else 64 if -(2**63) <= a < 2**63 else "u64"
        return ("i", a % 16 == 0, a == 1, width)
    if isinstance(a, float):
        return "f"
    if a is None:
        return "n"
    if _is_desc(a):  # Triton specialises a host TMA descriptor on its dtype, block shape and (Gluon) layout
        return ("desc", type(a), a.base.dtype, tuple(a.block_shape), getattr(a, "layout", None),
                a.base.data_ptr() % 16 == 0)
    return None


def _is_desc(a) -> bool:
    """A host TMA descriptor (Triton's or Gluon's TensorDescriptor) over a tensor."""
    return type(a).__name__ == "TensorDescriptor" and isinstance(getattr(a, "base", None), torch.Tensor)


@functools.lru_cache(maxsize=256)
def _tail(kernel, n_pos: int, kw_items: tuple):
    """The values of the kernel's parameters after the first n_pos: from the launch keywords (kw_items), else their
    defaults; None where a keyword names something that is neither such a parameter nor a launch option."""
    kw = dict(kw_items)
    names = list(kernel.arg_names)
    params = inspect.signature(kernel.fn).parameters
    rest = names[n_pos:]
    if any(k not in rest and k not in _OPTIONS for k in kw):
        return None
    out = []
    for name in rest:
        if name in kw:
            out.append(kw[name])
        elif params[name].default is not inspect.Parameter.empty:
            out.append(params[name].default)
        else:
            return None
    return tuple(out)


@functools.lru_cache(maxsize=1)
def _triton():
    """Triton's driver and knobs modules (imported at the first GPU launch: this module imports without Triton)."""
    from triton import knobs
    from triton.runtime import driver

    return driver, knobs


def _cuda_arg(a) -> bool:
    """A CUDA tensor, or a host TMA descriptor over one (a Gluon kernel's first arguments)."""
    t = a.base if _is_desc(a) else a
    return isinstance(t, torch.Tensor) and t.is_cuda


def launch(kernel, grid, *args, **kw):
    """kernel[grid](*args, **kw), the compiled kernel called directly when an equal launch was seen before (module
    docstring). Returns what kernel[grid] returned the first time (the compiled kernel), or None on the fast path."""
    hooks = getattr(kernel, "pre_run_hooks", None)  # [] on a JIT function; absent on anything else
    if (not CONFIG["direct"] or hooks is None or hooks or callable(grid)
            or not (args and _cuda_arg(args[0]))):
        return kernel[grid](*args, **kw)
    specs = tuple(spec(a) for a in args)
    if None in specs:
        return kernel[grid](*args, **kw)
    driver, knobs = _triton()
    dev = driver.active.get_current_device()
    key = (kernel, specs, tuple(kw.items()), dev)
    try:
        hit = _CACHE.get(key)
    except TypeError:  # a keyword value that cannot be hashed
        return kernel[grid](*args, **kw)
    if hit is not None:
        ck, tail = hit
        stream = driver.active.get_current_stream(dev)
        g = tuple(grid) + (1, 1)
        allargs = args + tail
        ck.run(g[0], g[1], g[2], stream, ck.function, ck.packed_metadata, ck.launch_metadata(grid, stream, *allargs),
               knobs.runtime.launch_enter_hook, knobs.runtime.launch_exit_hook, *allargs)
        return None
    ck = kernel[grid](*args, **kw)  # Triton returns the compiled kernel it launched (a pending compile resolved)
    if all(hasattr(ck, a) for a in ("run", "function", "packed_metadata", "launch_metadata")):
        tail = _tail(kernel, len(args), key[2])
        if tail is not None:
            _CACHE[key] = (ck, tail)
    return ck
