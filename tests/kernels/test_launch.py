"""`kernels/_launch.py`: compiled Triton kernels called directly after their first launch.

CPU (CI): the specialisation key, the parameter tail, and the fall-back to `kernel[grid]` (the interpreter). GPU:
the kernel the fast path calls is the one Triton itself picks for the same arguments, and the GDN forward+backward
and decode give bit-identical results with the fast path on and off.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch

from hybrid_posttrain.kernels import _launch
from hybrid_posttrain.kernels._launch import launch, spec

CUDA = torch.cuda.is_available()
HAS_TRITON = importlib.util.find_spec("triton") is not None
needs_triton = pytest.mark.skipif(not HAS_TRITON, reason="triton not installed")

if HAS_TRITON:
    import triton
    import triton.language as tl

    @triton.jit
    def _axpy(x, y, out, n, s, a, BLOCK: tl.constexpr, PLUS: tl.constexpr = 1):
        """out = a x + y + PLUS + (s % 7) over n elements."""
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        m = offs < n
        xv = tl.load(x + offs, mask=m)
        yv = tl.load(y + offs, mask=m)
        tl.store(out + offs, xv * a + yv + PLUS + (s % 7), mask=m)


def _want(x, y, s, a, plus=1):
    return x * a + y + plus + (s % 7)


def test_spec_tells_apart_what_triton_specialises_on():
    buf = torch.zeros(64)
    assert spec(buf) == spec(torch.ones(8))  # same dtype, both allocations 16-byte aligned
    assert spec(buf[1:]) != spec(buf)  # 4 bytes in: not a multiple of 16
    assert spec(buf[4:]) == spec(buf)  # 16 bytes in
    assert spec(buf.to(torch.bfloat16)) != spec(buf)
    ints = [1, 2, 16, 17, 32, 2**31 - 1, 2**31, 2**31 + 16, -16, 2**63]
    keys = {n: spec(n) for n in ints}
    assert keys[1] != keys[2] and keys[16] != keys[17] and keys[16] == keys[32] and keys[2] == keys[17]
    assert keys[2**31 - 1] != keys[2**31] and keys[2**31 + 16] != keys[32]  # a 64-bit integer
    assert keys[-16] == keys[16] and keys[2**63] != keys[2**31 + 16]  # int32 both; uint64 against int64
    assert spec(True) != spec(1) and spec(True) != spec(False)
    assert spec(0.5) == spec(2.0) and spec(None) == "n"
    assert spec("text") is None and spec((1, 2)) is None


@needs_triton
def test_spec_of_a_tma_descriptor_is_what_triton_specialises_on():
    """A host TMA descriptor (the Gluon kernels' arguments) is keyed on its dtype, block shape and layout, not on its
    tensor's address or shape (Triton compiles one kernel for all of those)."""
    from hybrid_posttrain.kernels.gdn import out_gluon as og

    if og.gluon is None:
        pytest.skip(f"no Gluon in this Triton: {og.IMPORT_ERROR}")
    a, b = torch.zeros(128, 2, 96, dtype=torch.bfloat16), torch.zeros(512, 4, 96, dtype=torch.bfloat16)
    da, db = og.key_descs(a, a, 64), og.key_descs(b, b, 64)
    assert spec(da[0]) == spec(db[0]) and spec(da[1]) == spec(db[1])  # other tokens, heads and address
    assert spec(da[0]) != spec(da[1])  # [64, 64] against [64, 32] blocks
    assert spec(da[0]) != spec(og.key_descs(a.half(), a.half(), 64)[0])  # fp16
    assert spec(da[0]) != spec(og.key_descs(a, a, 128)[0])  # 128-row blocks
    assert _launch._cuda_arg(da[0]) is False  # over a CPU tensor: Triton's own path


@needs_triton
def test_tail_is_the_constexprs_and_defaults_in_parameter_order():
    assert _launch._tail(_axpy, 6, (("BLOCK", 64), ("num_warps", 4))) == (64, 1)
    assert _launch._tail(_axpy, 6, (("PLUS", 3), ("BLOCK", 32))) == (32, 3)
    assert _launch._tail(_axpy, 6, (("BLOK", 64),)) is None  # a name that is no parameter: Triton's own path
    assert _launch._tail(_axpy, 6, ()) is None  # BLOCK has no default


def test_cpu_tensors_take_the_kernels_own_launch(monkeypatch):
    monkeypatch.setattr(_launch, "_CACHE", {})
    calls = []

    class Kernel:  # a JIT function's surface: pre_run_hooks, kernel[grid](...)
        pre_run_hooks: list = []

        def __getitem__(self, grid):
            return lambda *args, **kw: calls.append((grid, args, kw)) or "compiled"

    x = torch.zeros(4)
    for _ in range(2):
        assert launch(Kernel(), (3,), x, 5, BLOCK=4) == "compiled"
    assert calls == [((3,), (x, 5), {"BLOCK": 4})] * 2 and _launch._CACHE == {}


@needs_triton
def test_interpreter_launch_runs_the_kernel():
    """On the CPU (the interpreter in CI) `launch` is kernel[grid]: it computes, and keeps nothing."""
    if CUDA:
        pytest.skip("the CPU path; the GPU path has its own test")
    x, y, out = torch.randn(100), torch.randn(100), torch.empty(100)
    launch(_axpy, (4,), x, y, out, 100, 9, 0.5, BLOCK=32)
    torch.testing.assert_close(out, _want(x, y, 9, 0.5))


@pytest.mark.skipif(not (CUDA and HAS_TRITON), reason="compiled kernels: GPU only")
def test_fast_launch_picks_tritons_kernel(monkeypatch):
    """For aligned and misaligned tensors and integers 1 / 16 / 17 / 64-bit wide, the compiled kernel the fast path
    calls is the one Triton's own launch returns for the same arguments, and its results are right."""
    monkeypatch.setattr(_launch, "_CACHE", {})
    monkeypatch.setitem(_launch.CONFIG, "direct", True)
    buf = torch.randn(300, device="cuda")
    y = torch.randn(300, device="cuda")
    variants = []
    for xo in (0, 1, 4):  # 16-byte aligned, 4 bytes in, 16 bytes in
        for n in (16, 17, 256):
            for s in (1, 16, 17, 2**40 + 3):
                variants.append((xo, n, s))
    picked = {}
    for xo, n, s in variants:
        x = buf[xo:xo + 256]
        for rep in range(2):  # the first launch goes through Triton and is kept; the second is the fast path
            out = torch.full((256,), float("nan"), device="cuda")
            ret = launch(_axpy, (triton.cdiv(n, 32),), x, y, out, n, s, 0.25, BLOCK=32, num_warps=1)
            if rep == 1:
                assert ret is None, f"{(xo, n, s)}: the second launch did not take the fast path"
            torch.testing.assert_close(out[:n], _want(x[:n], y[:n], s, 0.25), msg=f"{(xo, n, s)} launch {rep}")
            assert torch.isnan(out[n:]).all()
        own = _axpy[(1,)](x, y, torch.empty(256, device="cuda"), n, s, 0.25, BLOCK=32, num_warps=1)
        key = (_axpy, tuple(spec(a) for a in (x, y, out, n, s, 0.25)), (("BLOCK", 32), ("num_warps", 1)),
               torch.cuda.current_device())
        assert _launch._CACHE[key][0] is own, f"{(xo, n, s)}: the fast path would call another compiled kernel"
        picked[(xo, n, s)] = own
    # Triton compiled different kernels for misalignment, 1, 16 and wide integers: the key told them apart
    assert len({id(k) for k in picked.values()}) >= 6
    # a grid given as a function of the launch's constexprs goes through Triton every time (nothing is kept)
    kept = len(_launch._CACHE)
    for _ in range(2):
        out = torch.empty(256, device="cuda")
        ret = launch(_axpy, lambda meta: (triton.cdiv(200, meta["BLOCK"]),), buf[:256], y, out, 200, 3, 0.5, BLOCK=64)
        assert ret is not None
        torch.testing.assert_close(out[:200], _want(buf[:200], y[:200], 3, 0.5))
    assert len(_launch._CACHE) == kept


@pytest.mark.skipif(not (CUDA and HAS_TRITON), reason="compiled kernels: GPU only")
@pytest.mark.parametrize("dims", [(2, 2, 96, 192), (2, 4, 128, 128)])
def test_gdn_fast_launch_bit_identical(monkeypatch, dims):
    """Forward+backward (three calls: the first compiles and keeps, the others take the fast path) and a decode loop
    give the same bits with the fast path on and off."""
    from hybrid_posttrain.kernels.gdn import (
        chunk,
        chunk_gated_delta_rule,
        dqk_gluon,
        fused_recurrent_gated_delta_rule,
        out_gluon,
    )

    from .test_gdn import make_inputs, run

    H, HV, K, V = dims
    xs = make_inputs(2, 200, H, HV, K, V, torch.bfloat16)
    monkeypatch.setattr(_launch, "_CACHE", {})
    # the Gluon kernels (Hopper) at every launch, however few its programs: their descriptors take the fast path too
    monkeypatch.setitem(chunk.CONFIG, "out_gluon_min", 0.0)
    monkeypatch.setitem(chunk.CONFIG, "dqk_gluon_min", 0.0)
    got = {}
    for fast in (False, True, True):
        monkeypatch.setitem(_launch.CONFIG, "direct", fast)
        got.setdefault(fast, []).append(run(chunk_gated_delta_rule, xs))
    assert _launch._CACHE, "the fast path kept no kernel"
    if out_gluon.status() is None:  # a Hopper GPU: both Gluon kernels kept
        kept = {key[0] for key in _launch._CACHE}
        assert {out_gluon._out_gl, dqk_gluon._dqk_gl} <= kept
    for again in got[True]:
        assert got[False][0].keys() == again.keys()
        for name, a in got[False][0].items():
            assert torch.equal(a, again[name]), name
    gen = torch.Generator().manual_seed(3)
    steps = [[torch.randn(2, 1, *s, generator=gen).cuda() for s in ((H, K), (H, K), (HV, V))] for _ in range(4)]
    outs = {}
    for fast in (False, True):
        monkeypatch.setitem(_launch.CONFIG, "direct", fast)
        state = torch.zeros(2, HV, K, V, device="cuda")
        for q, k, v in steps:
            g = torch.full((2, 1, HV), -0.1, device="cuda")
            beta = torch.full((2, 1, HV), 0.7, device="cuda")
            o, state = fused_recurrent_gated_delta_rule(q, k, v, g, beta, initial_state=state, output_final_state=True,
                                                        use_qk_l2norm_in_kernel=True)
            outs.setdefault(fast, []).append(o)
        outs[fast].append(state)
    for a, b in zip(outs[False], outs[True], strict=True):
        assert torch.equal(a, b)
