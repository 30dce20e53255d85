"""Gated DeltaNet kernels against the fp64 token-by-token recurrence.

CPU (CI): Triton runs in its interpreter at tiny shapes. With CUDA the same tests also run at full
head dims (Olmo-Hybrid K=96/V=192, Qwen3-Next K=V=128 with grouped value heads) in fp32 and bf16.
"""

from __future__ import annotations

import importlib.util
import re

import pytest
import torch

from hybrid_posttrain.kernels import gdn
from hybrid_posttrain.kernels.gdn import naive_recurrent_gated_delta_rule as naive

CUDA = torch.cuda.is_available()
HAS_TRITON = importlib.util.find_spec("triton") is not None
DEV = "cuda" if CUDA else "cpu"
needs_triton = pytest.mark.skipif(not HAS_TRITON, reason="triton not installed")

# (H, HV, K, V): q/k heads, value heads, key dim, value dim
CPU_DIMS = [(2, 2, 16, 32), (1, 2, 24, 48)]  # the second: grouped heads, non-power-of-two dims
GPU_DIMS = [(2, 2, 96, 192), (2, 4, 128, 128)]  # Olmo-Hybrid-like, Qwen3-Next-like (grouped)
DIMS = GPU_DIMS + CPU_DIMS[1:] if CUDA else CPU_DIMS
TS = [1, 63, 64, 65, 500] if CUDA else [1, 63, 64, 65]
DTYPES = [torch.float32, torch.bfloat16] if CUDA else [torch.float32]
# relative-error budgets (output, state, every gradient) against the fp64 reference
# fp32 is exact fp32 on the GPU too (no TF32 dots), so it shares the torch backend's budget.
TOL = {("hpt", torch.float32): 2e-5, ("hpt", torch.bfloat16): 1e-2,
       ("torch", torch.float32): 2e-5, ("torch", torch.bfloat16): 1e-2}


@pytest.fixture(autouse=True)
def _poison(monkeypatch):
    """Every buffer the Triton path allocates starts as NaN, so unwritten memory fails the checks."""
    if HAS_TRITON:
        from hybrid_posttrain.kernels.gdn import chunk

        monkeypatch.setattr(chunk, "POISON", True)
    yield


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    if not torch.isfinite(a).all():
        return float("inf")
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def make_inputs(B, T, H, HV, K, V, dtype, seed=0, n_states=None, device=DEV):
    gen = torch.Generator(device="cpu").manual_seed(seed)

    def r(*s):
        return torch.randn(*s, generator=gen)

    q, k, v = r(B, T, H, K), r(B, T, H, K), r(B, T, HV, V)
    g = torch.nn.functional.logsigmoid(r(B, T, HV) + 2.0)  # log-space decay, mostly near 0
    beta = torch.rand(B, T, HV, generator=gen) * 2.0  # [0, 2]: negative eigenvalues allowed
    h0 = r(n_states or B, HV, K, V)
    xs = [x.to(device=device, dtype=dtype) for x in (q, k, v)]
    xs += [g.to(device), beta.to(device=device, dtype=dtype), h0.to(device)]  # g and state in fp32
    return xs


def run(fn, xs, *, final=True, cu=None, grads=True, seed=1, do=None, dht=None, l2=True):
    q, k, v, g, beta, h0 = [x if x is None else x.detach().clone().requires_grad_(grads) for x in xs]
    o, ht = fn(q, k, v, g, beta, initial_state=h0, output_final_state=final, cu_seqlens=cu,
               use_qk_l2norm_in_kernel=l2)
    out = {"o": o.detach(), "ht": ht.detach() if ht is not None else None}
    if grads:
        gen = torch.Generator(device="cpu").manual_seed(seed)
        if do is None:
            do = torch.randn(o.shape, generator=gen).to(o.device)
        loss = (o.double() * do.double()).sum()
        if ht is not None:
            if dht is None:
                dht = torch.randn(ht.shape, generator=gen).to(ht.device)
            loss = loss + (ht.double() * dht.double()).sum()
        loss.backward()
        for n, x in zip(["dq", "dk", "dv", "dg", "dbeta", "dh0"], [q, k, v, g, beta, h0]):
            out[n] = x.grad if x is not None else None
    return out


def reference(xs, **kw):
    """fp64 recurrence on the same (already rounded) inputs."""
    return run(naive, [x.double() for x in xs], **kw)


def chunk_fn(backend):
    return gdn.get_gdn_fns(backend)[0] if backend == "torch" else gdn.chunk_gated_delta_rule


def assert_close(got, ref, tol, what=""):
    bad = {n: rel(got[n], ref[n]) for n in ref if ref[n] is not None}
    worst = max(bad.values())
    assert worst <= tol, f"{what}: relative errors {bad} exceed {tol}"


BACKENDS = (["hpt"] if HAS_TRITON else []) + ["torch"]


_REFS: dict = {}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).split(".")[-1])
@pytest.mark.parametrize("T", TS)
@pytest.mark.parametrize("dims", DIMS, ids=lambda d: "H{}-HV{}-K{}-V{}".format(*d))
def test_chunk_matches_recurrence(backend, dims, T, dtype):
    H, HV, K, V = dims
    xs = make_inputs(2, T, H, HV, K, V, dtype, seed=T)
    got = run(chunk_fn(backend), xs)
    key = (dims, T, dtype)  # the fp64 token-by-token reference is the slow part: one per input set
    if key not in _REFS:
        _REFS.clear()
        _REFS[key] = reference(xs)
    ref = _REFS[key]
    assert got["o"].dtype == dtype and got["ht"].dtype == torch.float32
    assert_close(got, ref, TOL[(backend, dtype)], f"{backend} {dims} T={T}")


@needs_triton
@pytest.mark.parametrize("prep", ["64", "16"])
def test_both_chunk_preps_match_recurrence(prep, monkeypatch):
    """The chunk prep runs as [64, 64] algebra (_fwd_prep64) for key blocks of 64 or more and in 16-row
    blocks (_fwd_prep) otherwise; the small test dims above only reach the second, so K = 64 here, with a
    cut-short chunk and grouped value heads, for each."""
    from hybrid_posttrain.kernels.gdn import chunk

    monkeypatch.setitem(chunk.CONFIG, "prep", prep)
    H, HV, K, V = (1, 2, 64, 96)  # two V blocks of 64, the second cut short
    xs = make_inputs(1, 100, H, HV, K, V, torch.float32, seed=13)
    assert_close(run(chunk_fn("hpt"), xs), reference(xs), TOL[("hpt", torch.float32)], f"prep {prep}")


@needs_triton
def test_inverse_on_fp16_operands(monkeypatch):
    """_fwd_prep64's last two block-doubling levels run on fp16 operands (10-bit mantissa, as TF32) where keys
    are L2-normalised, outside the fp32 path and only with the switch on; forced onto the fp32 path through
    `prep64_flags` (the interpreter has no bf16), the results stay within fp16's rounding of the reference while
    differing from the exact products, so the fp16 products did run."""
    from hybrid_posttrain.kernels.gdn import chunk

    monkeypatch.setitem(chunk.CONFIG, "bwd_split_t", True)
    assert chunk.prep64_flags(True, False) == {"F16": True, "SPLIT": True, "TW": 2}
    assert chunk.prep64_flags(False, False) == {"F16": False, "SPLIT": True, "TW": 2}  # raw keys: no bound on A
    assert chunk.prep64_flags(True, True) == {"F16": False, "SPLIT": False, "TW": 1}  # the fp32 path: exact products
    monkeypatch.setitem(chunk.CONFIG, "inv_f16", False)
    assert not chunk.prep64_flags(True, False)["F16"]
    H, HV, K, V = (1, 2, 64, 96)
    xs = make_inputs(1, 130, H, HV, K, V, torch.float32, seed=7)
    ref = reference(xs)
    exact = run(chunk_fn("hpt"), xs)
    monkeypatch.setattr(chunk, "prep64_flags", lambda l2, fp32: {"F16": l2, "SPLIT": False})
    got = run(chunk_fn("hpt"), xs)
    assert_close(got, ref, 5e-4, "fp16 inverse levels")
    assert rel(got["o"], exact["o"]) > 1e-6


def _out_chunks_seen(monkeypatch):
    """The chunks a program (S) of every `_fwd_out` launch from now on, in a list."""
    from hybrid_posttrain.kernels.gdn import chunk

    seen, real = [], chunk._run
    monkeypatch.setattr(chunk, "_run", lambda kern, grid, *a, **kw: (
        seen.append(kw["S"]) if kern is chunk._fwd_out else None) or real(kern, grid, *a, **kw))
    return seen


def _half(xs):
    """make_inputs' list with q, k, v and beta in fp16 (the interpreter has no bf16); g and the state stay fp32."""
    return [x.half() if i in (0, 1, 2, 4) else x for i, x in enumerate(xs)]


def _nearly_parallel(xs, T, H, HV, K, seed=8):
    """Keys of a chunk that nearly share one direction, beta near 2, slow decay (in place on make_inputs' list)."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    base = torch.randn(1, 1, H, K, generator=gen)
    xs[1] = (base + 0.05 * torch.randn(1, T, H, K, generator=gen)).to(xs[1])
    xs[4] = (1.9 + 0.1 * torch.rand(1, T, HV, generator=gen)).to(xs[4])
    xs[3] = torch.full_like(xs[3], -0.01)
    return xs


@needs_triton
def test_prep_splits_t_into_two_half_precision_operands(monkeypatch):
    """On the bf16 / fp16 path _fwd_prep64 feeds T to the w and u products as two half-precision operands (T's
    rounding and its remainder, prep_split_t), so T reaches them to about fp32 precision. On nearly parallel keys
    with beta near 2 that rounding dominated the forward's error (H100: o 5.2e-2 -> 2.5e-2 in bf16). fp16 inputs
    here (the interpreter has no bf16): the output and final state get closer to the reference than without the
    split, random inputs stay within fp16's error, and the fp32 path does not split."""
    from hybrid_posttrain.kernels.gdn import chunk

    H, HV, K, V = (1, 2, 64, 96)
    T = 130

    def errs(xs, split):
        monkeypatch.setitem(chunk.CONFIG, "prep_split_t", split)
        ref = reference(xs, grads=False)
        got = run(chunk_fn("hpt"), xs, grads=False)
        return {n: rel(got[n], ref[n]) for n in ("o", "ht")}, got

    xs32 = make_inputs(1, T, H, HV, K, V, torch.float32, seed=7)
    for split in (True, False):
        assert max(errs(_half(xs32), split)[0].values()) < 2e-3
    hard = _half(_nearly_parallel(make_inputs(1, T, H, HV, K, V, torch.float32, seed=7), T, H, HV, K))
    with_split, without = errs(hard, True)[0], errs(hard, False)[0]
    assert all(with_split[n] < 0.95 * without[n] for n in with_split), (with_split, without)
    assert rel(errs(xs32, True)[1]["o"], errs(xs32, False)[1]["o"]) == 0.0


@needs_triton
def test_backward_sees_t_as_its_rounding_plus_remainder(monkeypatch):
    """On the bf16 / fp16 path the forward stores T for the backward as its half-precision rounding and the
    remainder (bwd_split_t), and `_bwd_wy` takes both: the gradients depend on the pair only through its sum.
    fp16 inputs (the interpreter has no bf16), nearly parallel keys: the two parts swapped give the same gradients,
    while the first part replaced alone moves them; the fp32 path stores T alone."""
    from hybrid_posttrain.kernels.gdn import chunk

    monkeypatch.setitem(chunk.CONFIG, "bwd_split_t", True)
    H, HV, K, V = (1, 2, 64, 96)
    T = 130
    xs = _half(_nearly_parallel(make_inputs(1, T, H, HV, K, V, torch.float32, seed=7), T, H, HV, K))
    seen, real_bwd = {}, chunk._bwd

    def bwd(q, k, v, beta, scale, saved, *a):
        gc, rk, rq, Ai, *rest = saved
        seen["Ai"] = Ai.clone()
        if "move" in seen:
            Ai = seen["move"](Ai)
        return real_bwd(q, k, v, beta, scale, (gc, rk, rq, Ai, *rest), *a)

    monkeypatch.setattr(chunk, "_bwd", bwd)
    want = run(chunk_fn("hpt"), xs)
    Ai = seen["Ai"]
    assert Ai.shape[-1] == 2 * chunk.BT and Ai.dtype == torch.float16
    hi, lo = Ai[..., :64].double(), Ai[..., 64:].double()  # the remainder of an fp16 rounding: within half an ulp
    assert (lo != 0).any() and (lo.abs() <= hi.abs() * 2.0**-11 + 2.0**-24).all()

    def moved(only_first):  # the two parts swapped (the same sum), or the first part replaced alone
        return lambda a: torch.cat([a[..., 64:], a[..., 64:] if only_first else a[..., :64]], -1)

    for only_first, lo_b, hi_b in ((False, 0.0, 1e-3), (True, 1e-1, float("inf"))):
        seen["move"] = moved(only_first)
        got = run(chunk_fn("hpt"), xs)
        worst = max(rel(got[n], want[n]) for n in ("dq", "dk", "dv", "dg", "dbeta"))
        assert lo_b <= worst < hi_b, (only_first, worst)
    del seen["move"]
    run(chunk_fn("hpt"), [x.float() for x in xs[:5]] + [xs[5]])
    assert seen["Ai"].shape[-1] == chunk.BT


@needs_triton
@pytest.mark.parametrize("split,n_sm,want,kt,fuse", [(True, 1, "_bwd_state_ks", False, False),
                                                     (True, 1, "_bwd_state_ks", True, False),
                                                     (True, 1, "_bwd_state_ks", True, True),
                                                     (False, 1, "_bwd_state", False, True),
                                                     (True, 10**6, "_bwd_state", True, True)])
def test_split_key_backward_state_pass(split, n_sm, want, kt, fuse, monkeypatch):
    """Key dims that a power of two pads by a third (Olmo-Hybrid's 96) run the backward state pass with the
    key columns in blocks of 64 and 32 (`_bwd_state_ks`) where its programs outnumber the SMs, else the
    one-block pass; either way every gradient and the initial state's match the reference (packed
    documents, a cut-short chunk, a final-state gradient), with the second block's state part as it is or
    transposed (bstate_kt), and with the intra-chunk d(delta) from `_bwd_dlocal` or computed inside the
    split pass (bstate_fuse_dl: then `_bwd_dlocal` does not run; the one-block pass always takes it)."""
    from hybrid_posttrain.kernels.gdn import chunk

    monkeypatch.setitem(chunk.CONFIG, "bstate_ksplit", split)
    monkeypatch.setitem(chunk.CONFIG, "bstate_kt", kt)
    monkeypatch.setitem(chunk.CONFIG, "bstate_fuse_dl", fuse)
    monkeypatch.setitem(chunk.CONFIG, "bstate_fuse_min", 0.0)
    monkeypatch.setattr(chunk, "_n_sm", lambda device: n_sm)
    assert chunk._ksplit(96) == (32 if split else 0) and chunk._ksplit(128) == 0 and chunk._ksplit(64) == 0
    calls = []
    for name in ("_bwd_state", "_bwd_state_ks", "_bwd_dlocal"):
        kern = getattr(chunk, name)
        monkeypatch.setattr(chunk, name, _Spy(kern, lambda n=name: calls.append(n)))
    xs = make_inputs(1, 100, 1, 2, 96, 32, torch.float32, seed=19, n_states=2)
    cu = torch.tensor([0, 70, 100], device=DEV)
    assert_close(run(chunk_fn("hpt"), xs, cu=cu), reference(xs, cu=cu), TOL[("hpt", torch.float32)], f"split {split}")
    fused = want == "_bwd_state_ks" and fuse
    assert calls == ([want] if fused else ["_bwd_dlocal", want])


@needs_triton
def test_split_key_pass_fuses_dlocal_only_on_large_grids(monkeypatch):
    """The split-key pass takes over _bwd_dlocal's product only where it has bstate_fuse_min programs per SM
    or more (fewer: the product lengthens each program's serial chain, measured slower)."""
    from hybrid_posttrain.kernels.gdn import chunk

    monkeypatch.setattr(chunk, "_n_sm", lambda device: 100)
    monkeypatch.setitem(chunk.CONFIG, "bstate_fuse_min", 3.0)
    assert chunk.bstate_kernel(96, 101)[1]["FUSE_DL"] is False
    assert chunk.bstate_kernel(96, 300)[1]["FUSE_DL"] is True
    assert chunk.bstate_kernel(96, 100)[0] is chunk._bwd_state  # not above the SMs: the one-block pass
    monkeypatch.setitem(chunk.CONFIG, "bstate_fuse_dl", False)
    assert chunk.bstate_kernel(96, 300)[1]["FUSE_DL"] is False


@needs_triton
@pytest.mark.parametrize("heads_fast", [True, False])
@pytest.mark.parametrize("T", [100, 200])
def test_per_chunk_grid_orders(heads_fast, T, monkeypatch):
    """The per-chunk kernels run on a (value heads, chunks) grid (heads_fast) or (chunks, value heads), and
    read their chunk and head from whichever it is: both match the reference, with as many chunks as value
    heads (T = 100, one document: 2 and 2, where the grid's shape cannot tell the orders apart) and with more
    (two packed documents, 2 + 3 chunks)."""
    from hybrid_posttrain.kernels.gdn import chunk

    monkeypatch.setitem(chunk.CONFIG, "heads_fast", heads_fast)
    NC = 2 if T == 100 else 5
    assert chunk._chunk_grid(NC, 2) == ((2, NC) if heads_fast else (NC, 2))
    xs = make_inputs(1, T, 1, 2, 16, 32, torch.float32, seed=23, n_states=1 if T == 100 else 2)
    cu = torch.tensor([0, T] if T == 100 else [0, 70, T], device=DEV)
    assert len(chunk._meta(tuple(cu.tolist()), "cpu")[0]) == 2 * NC
    assert_close(run(chunk_fn("hpt"), xs, cu=cu), reference(xs, cu=cu), TOL[("hpt", torch.float32)], f"T={T}")


class _Spy:
    """A kernel whose launches are recorded (kernel[grid](...) calls `seen` first)."""

    def __init__(self, kern, seen):
        self.kern, self.seen, self.__name__ = kern, seen, kern.__name__

    def __getitem__(self, grid):
        self.seen()
        return self.kern[grid]


@needs_triton
@pytest.mark.parametrize("atomic", [True, False])
def test_grouped_heads_summed_either_way(atomic, monkeypatch):
    """Grouped value heads' dq / dk reach their q/k head by atomic adds in the per-chunk kernels, or (before
    Hopper, in bf16, or with group_atomic off) by per-value-head outputs and one add: both match the
    reference, with a cut-short chunk."""
    from hybrid_posttrain.kernels.gdn import chunk

    monkeypatch.setitem(chunk.CONFIG, "group_atomic", atomic)
    xs = make_inputs(1, 100, 1, 3, 16, 32, torch.float32, seed=17)
    assert_close(run(chunk_fn("hpt"), xs), reference(xs), TOL[("hpt", torch.float32)], f"atomic {atomic}")


@needs_triton
@pytest.mark.parametrize("knob, on", [("wy_sum_dk", True), ("wy_sum_dk", False), ("bchunk_norms", True),
                                      ("bchunk_norms", False)], ids=lambda x: str(x))
def test_backward_forms_match_reference_and_each_other(knob, on, monkeypatch):
    """Two forms of the per-chunk backward, each a CONFIG switch, both match the fp64 reference and agree with each
    other (to the rounding the forms differ by): grouped heads, packed documents with a cut-short chunk, an initial
    state, with L2-normalised q and k and without; bf16 and fp32 at the full head dims on the GPU.
    - wy_sum_dk: `_bwd_wy` takes dk's two products with k through A (dA E beta on either side of k k^T) as one
      product of their summed left sides, or as two.
    - bchunk_norms: `_bwd_dqk` and `_bwd_wy` read 1/||q|| and 1/||k|| from the forward's buffers (which hold ones
      without L2 norms), or reduce the q and k tiles again."""
    from hybrid_posttrain.kernels.gdn import chunk

    lens = [70, 64, 30]
    cu = torch.tensor([0] + torch.tensor(lens).cumsum(0).tolist(), device=DEV)
    for H, HV, K, V in (GPU_DIMS if CUDA else [(1, 2, 24, 48), (1, 2, 64, 64)]):
        for dtype in DTYPES:
            raw = make_inputs(1, sum(lens), H, HV, K, V, dtype, seed=53, n_states=len(lens))
            for l2 in (True, False):
                # without the kernel's L2 norms, inputs of unit rows (raw ones of norm ~sqrt(K) blow the state up)
                xs = raw if l2 else [torch.nn.functional.normalize(x.float(), dim=-1).to(dtype) for x in raw[:2]] + raw[2:]
                what = f"{knob}={on} {(H, HV, K, V)} {dtype} l2={l2}"
                monkeypatch.setitem(chunk.CONFIG, knob, on)
                got = run(chunk_fn("hpt"), xs, cu=cu, l2=l2)
                assert_close(got, reference(xs, cu=cu, l2=l2), TOL[("hpt", dtype)], what)
                monkeypatch.setitem(chunk.CONFIG, knob, not on)
                other = run(chunk_fn("hpt"), xs, cu=cu, l2=l2)
                assert_close(got, other, 2e-6 if dtype == torch.float32 else 5e-3, what + " forms")


@needs_triton
@pytest.mark.parametrize("dims", [DIMS[-1], (1, 2, 64, 96)], ids=lambda d: "H{}-HV{}-K{}-V{}".format(*d))
def test_no_grad_forward(dims, monkeypatch):
    """Without a backward to follow (torch.no_grad, or no input that requires grad) the forward skips what
    only the backward reads; its output and final state are still the reference's (packed documents of 1
    to 4 chunks, cut short or not), and the same inputs with gradients take the full path. K = 64 reaches
    the [64, 64] prep."""
    from hybrid_posttrain.kernels.gdn import chunk

    seen = []
    real = chunk._fwd
    monkeypatch.setattr(chunk, "_fwd", lambda *a, **kw: seen.append(a[-1]) or real(*a, **kw))
    H, HV, K, V = dims
    lens = [1, 63, 200, 65, 130]
    cu = torch.tensor([0] + torch.tensor(lens).cumsum(0).tolist(), device=DEV)
    xs = make_inputs(1, sum(lens), H, HV, K, V, torch.float32, seed=21, n_states=len(lens))
    ref = reference(xs, cu=cu)
    got = run(chunk_fn("hpt"), xs, cu=cu)
    kw = dict(initial_state=xs[5], output_final_state=True, cu_seqlens=cu, use_qk_l2norm_in_kernel=True)
    with torch.no_grad():
        o, ht = gdn.chunk_gated_delta_rule(*[x.requires_grad_() for x in xs[:5]], **kw)
    o2, _ = gdn.chunk_gated_delta_rule(*[x.detach() for x in xs[:5]], **dict(kw, initial_state=xs[5].detach()))
    assert seen == [True, False, False]
    assert not o.requires_grad and not o2.requires_grad
    assert_close(got, ref, TOL[("hpt", torch.float32)], "with gradients")
    assert_close({"o": o, "ht": ht}, {"o": ref["o"], "ht": ref["ht"]}, TOL[("hpt", torch.float32)], "without")
    assert rel(o2, o) == 0.0


@needs_triton
def test_launch_settings_that_fail_on_the_gpu_are_refused(monkeypatch):
    """One pipeline stage for the forward state pass (wrong outputs on the H100 with Triton 3.6) or for the
    bf16 backward state pass (an illegal memory access) is refused with one clear line before anything runs;
    the fp32 backward's default of one stage is not."""
    from hybrid_posttrain.kernels._env import KernelEnvError
    from hybrid_posttrain.kernels.gdn import chunk

    chunk.refuse_broken(chunk.launches(128, 128, False), False)
    chunk.refuse_broken(chunk.launches(128, 128, True), True)
    assert chunk.launches(128, 128, True)["_bwd_state"][2] == 1
    monkeypatch.setattr(chunk, "_n_sm", lambda device: 132)
    monkeypatch.setattr(chunk, "_max_smem", lambda device: 232448)
    # padded / power-of-two key dims; a padded one on fewer programs than SMs (Olmo-Hybrid 1 x 32768)
    for knob, K, n in (("bstate_stages", 96, None), ("bstate_stages_pow2k", 128, None), ("bstate_stages_few", 96, 30)):
        monkeypatch.setitem(chunk.CONFIG, knob, 1)
        with pytest.raises(KernelEnvError, match="1 stage.*backward state pass.*faults"):
            chunk.refuse_broken(chunk.launches(K, 192, False, n, "cuda"), False)
        monkeypatch.setitem(chunk.CONFIG, knob, 2)
        chunk.refuse_broken(chunk.launches(K, 192, False, n, "cuda"), False)
    xs = make_inputs(1, 70, 1, 2, 24, 48, torch.float32)
    for knob in ("state_stages", "state_stages_few"):  # grids that fill the SMs / fewer programs than SMs
        monkeypatch.setitem(chunk.CONFIG, knob, 1)
    with pytest.raises(KernelEnvError, match="1 stage.*_fwd_state.*gives wrong outputs"):
        run(chunk_fn("hpt"), xs)


@pytest.mark.skipif(not CUDA, reason="compiled launch settings: GPU only")
@pytest.mark.parametrize("over", [{"state_stages_few": 2}, {"state_bv": 32}, {"bstate_stages": 3},
                                  {"bstate_stages_pow2k": 2}, {"bstate_stages_few": 2, "bstate_warps_few": 4},
                                  {"bstate_bv": 32},
                                  {"out_stages": 1}, {"dl_stages": 2}, {"dqk_stages": 2}, {"bchunk_stages": 2},
                                  {"bchunk_stages_2vb": 3}, {"pf_wy": False}, {"pf_wy_dgp": True}],
                         ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
def test_launch_settings_do_not_change_results(over, monkeypatch):
    """Launch settings a sweep may pick (stages, V blocks) give the default's output and gradients (bf16,
    full head dims, packed documents): on the H100 with Triton 3.6 these were bit-identical, while one stage
    for a state pass was not (test above)."""
    from hybrid_posttrain.kernels.gdn import chunk

    lens = [500, 64, 300]
    cu = torch.tensor([0] + torch.tensor(lens).cumsum(0).tolist(), device=DEV)
    for H, HV, K, V in GPU_DIMS:
        xs = make_inputs(1, sum(lens), H, HV, K, V, torch.bfloat16, seed=31, n_states=len(lens))
        want = run(chunk_fn("hpt"), xs, cu=cu)
        with monkeypatch.context() as m:
            for key, val in over.items():
                m.setitem(chunk.CONFIG, key, val)
            got = run(chunk_fn("hpt"), xs, cu=cu)
        assert_close(got, want, 1e-5, f"{over} at {(H, HV, K, V)}")


@needs_triton
def test_wy_prefetch_only_where_it_can_run(monkeypatch):
    """`_bwd_wy`'s L2 prefetch (`_pf`: inline PTX) is switched on for inputs on an NVIDIA GPU in half precision only:
    the interpreter runs no inline assembly, ROCm no PTX, and the fp32 path is another kernel; the d(gc) part only
    with it. (That the kernel compiles to prefetch instructions with it and to none without: tests/test_bench.py;
    that it changes no result: the launch settings test above, on the GPU.)"""
    from types import SimpleNamespace

    from hybrid_posttrain.kernels.gdn import chunk

    cuda = SimpleNamespace(is_cuda=True, dtype=torch.bfloat16)
    assert chunk._on_nvidia(cuda)
    assert not chunk._on_nvidia(torch.zeros(1, dtype=torch.bfloat16))  # the CPU (the interpreter)
    with monkeypatch.context() as m:  # ROCm: no PTX
        m.setattr(torch.version, "hip", "6.2")
        assert not chunk._on_nvidia(cuda)
    assert chunk.wy_prefetch_flags(True, False) == {"PF": True, "PFG": False}
    assert chunk.wy_prefetch_flags(True, True) == {"PF": False, "PFG": False}  # fp32
    assert chunk.wy_prefetch_flags(False, False) == {"PF": False, "PFG": False}  # not NVIDIA
    monkeypatch.setitem(chunk.CONFIG, "pf_wy_dgp", True)
    assert chunk.wy_prefetch_flags(True, False) == {"PF": True, "PFG": True}
    assert chunk.wy_prefetch_flags(False, False) == {"PF": False, "PFG": False}
    monkeypatch.setitem(chunk.CONFIG, "pf_wy", False)
    assert chunk.wy_prefetch_flags(True, False) == {"PF": False, "PFG": False}


@needs_triton
def test_parts_rule(monkeypatch):
    """The forward and the backward run in parts only for one sequence whose state pass leaves SMs free (the
    backward: a quarter of them), and never with parts shorter than state_parts_min chunks (132 SMs as on the
    H100)."""
    from hybrid_posttrain.kernels.gdn import chunk

    monkeypatch.setattr(chunk, "_n_sm", lambda device: 132)
    monkeypatch.setitem(chunk.CONFIG, "state_parts", 2)
    monkeypatch.setitem(chunk.CONFIG, "state_parts_min", 16)
    assert chunk.n_parts(1, 512, 128) == 2  # Qwen3-Next 1 x 32768: 128 state programs
    assert chunk.n_parts(1, 512, 90) == 2  # Olmo-Hybrid 1 x 32768
    assert chunk.n_parts(2, 128, 128) == 1  # two sequences (2 x 4096)
    assert chunk.n_parts(1, 512, 133) == 1  # a state pass that fills the SMs
    assert chunk.n_parts(1, 31, 64) == 1  # parts of fewer than 16 chunks
    monkeypatch.setitem(chunk.CONFIG, "state_parts", 8)
    assert chunk.n_parts(1, 64, 64) == 4 and chunk.n_parts(1, 512, 64) == 8
    monkeypatch.setitem(chunk.CONFIG, "state_parts", 1)
    assert chunk.n_parts(1, 512, 64) == 1
    monkeypatch.setitem(chunk.CONFIG, "bstate_parts", 4)  # the backward's own count, on its own pass's programs
    assert chunk.n_parts(1, 512, 90, backward=True) == 4 and chunk.n_parts(1, 512, 200, backward=True) == 1
    monkeypatch.setitem(chunk.CONFIG, "bstate_parts_load", 0.75)  # ... and only where it leaves a quarter free
    assert chunk.n_parts(1, 512, 128, backward=True) == 1
    assert chunk.n_parts(1, 512, 99, backward=True) == 4
    # the parts cover the sequence's chunks in order, each once
    parts = chunk._parts((0, 300), 3, "cpu")
    assert [(pt.c0, pt.c1) for pt in parts] == [(0, 1), (1, 3), (3, 5)]
    assert [pt.cu.tolist() for pt in parts] == [[0, 64], [64, 192], [192, 300]]
    # ... aligned to the output's groups of two chunks: each part starts at an even chunk, and carries its first group
    parts = chunk._parts((0, 300), 3, "cpu", 2)
    assert [(pt.c0, pt.c1, pt.coff.item(), pt.goff.item()) for pt in parts] == [(0, 2, 0, 0), (2, 4, 2, 1), (4, 5, 4, 2)]
    assert [(pt.g0, pt.g1) for pt in parts] == [(0, 1), (1, 2), (2, 3)]


@needs_triton
@pytest.mark.parametrize("final", [True, False])
def test_state_passes_in_parts_equal_one_pass(final, monkeypatch):
    """The forward and the backward of one sequence in parts (the state and its gradient carried between parts
    in fp32; on the GPU each part's state pass on a second stream beside the per-chunk kernels) give the
    one-pass output, final state and gradients bit for bit, with and without an initial state, and the no-grad
    forward too. The backward runs in a different number of parts from the forward's."""
    from hybrid_posttrain.kernels.gdn import chunk

    monkeypatch.setattr(chunk, "_n_sm", lambda device: 1 << 20)  # the state pass always leaves SMs free
    if CUDA:
        dims, T, dtype = [(2, 4, 128, 128), (2, 2, 96, 192)], 64 * 40 + 17, torch.bfloat16
        monkeypatch.setitem(chunk.CONFIG, "state_parts_min", 8)
    else:
        dims, T, dtype = [(1, 2, 24, 48)], 64 * 4 + 17, torch.float32
        monkeypatch.setitem(chunk.CONFIG, "state_parts_min", 1)
    fn = chunk_fn("hpt")
    for H, HV, K, V in dims:
        xs = make_inputs(1, T, H, HV, K, V, dtype, seed=41)
        no_h0 = xs[:5] + [None]
        fwd_kw = dict(initial_state=None, output_final_state=final, use_qk_l2norm_in_kernel=True)
        monkeypatch.setitem(chunk.CONFIG, "state_parts", 1)
        monkeypatch.setitem(chunk.CONFIG, "bstate_parts", 1)
        want, want_no_h0 = run(fn, xs, final=final), run(fn, no_h0, final=final)
        want_fwd = fn(*xs[:5], **fwd_kw)
        for P, PB in ((2, 3), (3, 1), (5, 2), (1, 5)):
            monkeypatch.setitem(chunk.CONFIG, "state_parts", P)
            monkeypatch.setitem(chunk.CONFIG, "bstate_parts", PB)
            assert chunk.n_parts(1, chunk.triton.cdiv(T, chunk.BT), 1) == P
            assert chunk.n_parts(1, chunk.triton.cdiv(T, chunk.BT), 1, backward=True) == PB
            what = f"{P} forward / {PB} backward parts at {(H, HV, K, V)}"
            assert_close(run(fn, xs, final=final), want, 0.0, what)
            assert_close(run(fn, no_h0, final=final), want_no_h0, 0.0, f"{what}, no initial state")
            got_fwd = fn(*xs[:5], **fwd_kw)
            assert torch.equal(got_fwd[0], want_fwd[0])
            if final:
                assert torch.equal(got_fwd[1], want_fwd[1])
        if not CUDA:  # the one-pass forward itself against the fp64 recurrence (on the GPU: the tests above)
            assert_close(want, reference(xs, final=final), TOL[("hpt", dtype)])


@needs_triton
@pytest.mark.parametrize("grad", [True, False], ids=["grad", "no_grad"])
def test_output_in_groups_of_two_chunks(grad, monkeypatch):
    """`_fwd_out` over two chunks a program (out_chunks 2: the second chunk's state is not read but built into
    the products from the pair's first state; without a backward the state pass stores only the pairs' states)
    gives the reference's output, final state and gradients: packed documents of odd and even chunk counts, cut
    short or not, and one sequence in parts. fp32 (exact products, so that its 2e-5 budget catches a decay
    missed across the pair) is put on it here; bf16 takes it by default (on the GPU: full head dims, the packed
    documents; the parts there are checked bit for bit against one pass by the test above)."""
    from hybrid_posttrain.kernels.gdn import chunk

    monkeypatch.setattr(chunk, "out_chunks", lambda fp32, BK=128, device="cpu": 2)
    monkeypatch.setattr(chunk, "_n_sm", lambda device: 1 << 20)  # one sequence: its state pass in parts
    monkeypatch.setitem(chunk.CONFIG, "state_parts_min", 1)
    monkeypatch.setitem(chunk.CONFIG, "state_parts", 3)
    seen, states, real_fwd = _out_chunks_seen(monkeypatch), [], chunk._fwd

    def fwd(*a, **kw):  # how many states the forward kept (the state pass's buffer)
        out = real_fwd(*a, **kw)
        states.append(out[2][5].shape[0])
        return out

    monkeypatch.setattr(chunk, "_fwd", fwd)
    docs, one = [1, 63, 200, 65, 130, 300], [64 * 9 + 5]
    cases = [((1, 2, 24, 48), docs, torch.float32), ((1, 2, 24, 48), one, torch.float32)]
    cases += [(d, docs, torch.bfloat16) for d in GPU_DIMS] if CUDA else []
    for (H, HV, K, V), lens, dtype in cases:
        cu = torch.tensor([0] + torch.tensor(lens).cumsum(0).tolist(), device=DEV)
        xs = make_inputs(1, sum(lens), H, HV, K, V, dtype, seed=51, n_states=len(lens))
        ref = reference(xs, cu=cu, grads=grad)
        got = run(chunk_fn("hpt"), xs, cu=cu, grads=grad)  # no input requires grad without: the no-grad forward
        assert_close(got, ref, TOL[("hpt", dtype)], f"{(H, HV, K, V)} {lens} {dtype} grad={grad}")
        chunks = [-(-n // chunk.BT) for n in lens]  # every chunk's state for a backward, else each pair's
        assert states[-1] == (sum(chunks) if grad else sum(-(-c // 2) for c in chunks))
    assert set(seen) == {2}


def _gluon():
    from hybrid_posttrain.kernels.gdn import out_gluon

    return out_gluon


HOPPER = CUDA and torch.cuda.get_device_capability()[0] == 9


def _unit_qk(xs):
    """xs with q and k rows of unit L2 norm (inputs for the path without the norm in the kernel: random rows of
    norm sqrt(K) make the recurrence grow past fp16's range)."""
    return [torch.nn.functional.normalize(x.float(), dim=-1).to(x.dtype) if i < 2 else x for i, x in enumerate(xs)]


@needs_triton
def test_gluon_output_only_where_it_can_run(monkeypatch):
    """The Gluon output kernel (`out_gluon.py`) takes a forward's output only on a Hopper GPU, in half precision with
    q, k and v of one dtype, on pairs of chunks, at key dims of 64 + (0, 16, 32 or 64), whole 64-column value blocks,
    with CONFIG out_gluon on; everywhere else (the CPU among them) `_fwd_out` runs, and nothing here calls it."""
    from hybrid_posttrain.kernels.gdn import chunk  # noqa: F401  (the driver whose forwards run below)
    og = _gluon()

    calls = []
    monkeypatch.setattr(og, "run", lambda *a, **kw: calls.append(a))
    q = torch.zeros(4, 2, 96, dtype=torch.bfloat16)
    assert not og.usable(q, q, torch.zeros(4, 2, 192, dtype=torch.bfloat16), 2)  # the CPU
    if og.gluon is None:
        pytest.skip(f"no Gluon in this Triton: {og.IMPORT_ERROR}")
    bf, hf, f32 = torch.bfloat16, torch.float16, torch.float32

    def fits(qdt=bf, vdt=bf, K=96, V=192, S=2, hopper=True, on=True):
        return og.fits(qdt, vdt, K, V, S, hopper, on)

    assert fits() and fits(hf, hf) and all(fits(K=k) for k in (64, 80, 96, 128))
    assert og.key_blocks(96) == (64, 32) and og.key_blocks(128) == (64, 64) and og.key_blocks(64) == (64, 0)
    assert not fits(K=32) and not fits(K=16)  # never run on a GPU
    assert not fits(hopper=False) and not fits(on=False)
    assert not fits(f32, f32) and not fits(bf, hf)  # the fp32 path; mixed dtypes
    assert not fits(S=1) and not fits(K=256) and not fits(K=24) and not fits(K=112)  # blocks of 24, 48 columns
    assert not fits(V=96)  # value dim not in whole 64-column blocks
    xs = make_inputs(1, 130, 1, 2, 16, 32, torch.float32, seed=3)
    run(chunk_fn("hpt"), xs)
    assert not calls


@needs_triton
def test_gluon_output_compiles_for_hopper():
    """The Gluon kernel compiles for sm_90 without a GPU (Triton's bundled ptxas), at both key blocks and 4 / 8 warps:
    Gluon is experimental and renames its functions between Triton releases (the TMA load did from 3.6 to 3.7), which
    this catches on the CPU. Its shared memory as `benchmarks/gluon_out.py --offline` prints it."""
    og = _gluon()
    if og.gluon is None:
        pytest.skip(f"no Gluon in this Triton: {og.IMPORT_ERROR}")
    import os
    import subprocess
    import sys

    env = dict(os.environ, TRITON_INTERPRET="0")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    r = subprocess.run([sys.executable, "benchmarks/gluon_out.py", "--offline", "--shapes", "qwen,olmo,k64,k80",
                        "--warps", "4,8"], cwd=root, env=env, capture_output=True, text=True, timeout=600)
    lines = [x for x in r.stdout.splitlines() if x.startswith("gluon_out offline")]
    assert r.returncode == 0 and len(lines) == 8, r.stdout[-2000:] + r.stderr[-2000:]
    for line in lines:
        kb = int(re.search(r"(\d+) KB shared", line)[1])
        assert kb <= 113, line  # two programs an SM fit in an H100's shared memory (a register count is never over 255)


@pytest.mark.skipif(not (HAS_TRITON and HOPPER), reason="the Gluon kernel runs on Hopper GPUs only")
@pytest.mark.parametrize("dims", [(2, 2, 96, 192), (2, 4, 128, 128), (1, 2, 64, 64), (1, 1, 80, 64)],
                         ids=lambda d: "H{}-HV{}-K{}-V{}".format(*d))
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_gluon_output_equals_triton_output(dims, dtype, monkeypatch):
    """On a Hopper GPU the Gluon output kernel gives `_fwd_out`'s output to the rounding of a different summation
    order, and the same 1/||q||, with a backward (every chunk's state stored) and without (each pair's), on packed
    documents of odd and even chunk counts cut short or not, a one-sequence forward in parts, and both grid orders;
    through the whole forward and backward the gradients agree too. Launches of fewer programs an SM than
    out_gluon_min keep the Triton kernel."""
    og = _gluon()
    from hybrid_posttrain.kernels.gdn import chunk

    if og.gluon is None:
        pytest.skip(f"no Gluon in this Triton: {og.IMPORT_ERROR}")
    H, HV, K, V = dims
    monkeypatch.setitem(chunk.CONFIG, "out_gluon_min", 0.0)  # every launch, however few its programs
    calls, real = [], og.run
    monkeypatch.setattr(og, "run", lambda *a, **kw: calls.append(a[10]) or real(*a, **kw))  # a[10]: HS
    for lens, heads_fast in (([1, 63, 200, 65, 130, 300], True), ([64 * 9 + 5], True), ([700, 64, 3], False)):
        monkeypatch.setitem(chunk.CONFIG, "heads_fast", heads_fast)
        cu = torch.tensor([0] + torch.tensor(lens).cumsum(0).tolist(), device=DEV)
        xs = make_inputs(1, sum(lens), H, HV, K, V, dtype, seed=67, n_states=len(lens))
        for grad in (True, False):
            calls.clear()
            monkeypatch.setitem(chunk.CONFIG, "out_gluon", True)
            got = run(chunk_fn("hpt"), xs, cu=cu, grads=grad)
            assert calls and set(calls) == {1 if grad else 2}  # the state index: every chunk's, or each pair's
            monkeypatch.setitem(chunk.CONFIG, "out_gluon", False)
            calls.clear()
            want = run(chunk_fn("hpt"), xs, cu=cu, grads=grad)
            assert not calls
            assert_close(got, want, 2e-3, f"{dims} {dtype} {lens} grad={grad}")
    # q and k as they are (no L2 norm in the kernel): the rows' 1/||q|| are ones
    for on in (True, False):
        monkeypatch.setitem(chunk.CONFIG, "out_gluon", on)
        calls.clear()
        res = run(chunk_fn("hpt"), _unit_qk(xs), cu=cu, grads=False, l2=False)
        assert bool(calls) == on
        if on:
            got = res
    assert_close(got, res, 2e-3, f"{dims} {dtype} without the L2 norm")
    monkeypatch.setitem(chunk.CONFIG, "out_gluon", True)
    monkeypatch.setitem(chunk.CONFIG, "out_gluon_min", 1e9)  # launches of fewer programs an SM take `_fwd_out`
    calls.clear()
    run(chunk_fn("hpt"), xs, cu=cu, grads=False)
    assert not calls


@needs_triton
def test_gluon_dqk_only_where_it_can_run(monkeypatch):
    """The backward's Gluon `_bwd_dqk` takes a backward only on a Hopper GPU, in half precision with q, k, the states,
    delta and do of one dtype and contiguous, at the key dims the output kernel takes, whole 64-column value blocks,
    the row norms from the forward's buffers (bchunk_norms) and CONFIG dqk_gluon on; nothing on the CPU calls it."""
    from hybrid_posttrain.kernels.gdn import dqk_gluon as dg

    calls = []
    monkeypatch.setattr(dg, "run", lambda *a, **kw: calls.append(a))
    bf = torch.bfloat16
    q, h, d = torch.zeros(64, 2, 96, dtype=bf), torch.zeros(1, 2, 96, 192, dtype=bf), torch.zeros(64, 2, 192, dtype=bf)
    assert not dg.usable(q, q, h, h, d, d)  # the CPU
    if dg.gluon is None:
        pytest.skip(f"no Gluon in this Triton: {_gluon().IMPORT_ERROR}")

    def fits(qdt=bf, K=96, V=192, hopper=True, on=True, rb=True, same=True):
        return dg.fits(qdt, K, V, hopper, on, rb, same)

    assert fits() and fits(torch.float16) and all(fits(K=k) for k in (64, 80, 96, 128))
    assert not fits(hopper=False) and not fits(on=False) and not fits(rb=False) and not fits(same=False)
    assert not fits(torch.float32) and not fits(K=32) and not fits(K=256) and not fits(V=96)
    assert dg.slots(96) == 2 and dg.slots(128) == 1  # two programs an SM's shared memory
    for warps, K in ((8, 128), (8, 64), (4, 96)):  # measured right on the GPU: no refusal
        dg.check_warps(warps, K)
    with pytest.raises(ValueError, match="8 warps give wrong outputs at key dim 96"):
        dg.check_warps(8, 96)  # Olmo-Hybrid on 8 warps: wrong outputs (session 25)
    xs = make_inputs(1, 130, 1, 2, 16, 32, torch.float32, seed=3)
    run(chunk_fn("hpt"), xs)
    assert not calls


@needs_triton
def test_gluon_prep_prototype_only_where_asked(monkeypatch):
    """The prototype of the forward's prep in Gluon (`prep_gluon.py`, never run on a GPU) is off by default (CONFIG
    prep_gluon); asked for, it takes only what the backward's Gluon kernels take, with L2-normalised keys and T as one
    operand; nothing on the CPU calls it."""
    from hybrid_posttrain.kernels.gdn import chunk
    from hybrid_posttrain.kernels.gdn import prep_gluon as pg

    assert chunk.CONFIG["prep_gluon"] is False
    calls = []
    monkeypatch.setattr(pg, "run", lambda *a, **kw: calls.append(a))
    bf = torch.bfloat16
    k, v = torch.zeros(64, 2, 96, dtype=bf), torch.zeros(64, 2, 192, dtype=bf)
    assert not pg.usable(k, v, None, k, v, enabled=True)  # the CPU
    if pg.gluon is None:
        pytest.skip(f"no Gluon in this Triton: {_gluon().IMPORT_ERROR}")

    def fits(kdt=bf, K=96, V=192, hopper=True, on=True, l2=True, tw=1, same=True):
        return pg.fits(kdt, K, V, hopper, on, l2, tw, same)

    assert fits() and fits(torch.float16) and all(fits(K=x) for x in (64, 80, 96, 128))
    assert not fits(on=False) and not fits(l2=False) and not fits(tw=2) and not fits(hopper=False)
    assert not fits(torch.float32) and not fits(K=256) and not fits(V=96) and not fits(same=False)
    monkeypatch.setitem(chunk.CONFIG, "prep_gluon", True)
    run(chunk_fn("hpt"), make_inputs(1, 130, 1, 2, 16, 32, torch.float32, seed=3))
    assert not calls


@pytest.mark.skipif(not (HAS_TRITON and HOPPER), reason="the Gluon kernel runs on Hopper GPUs only")
@pytest.mark.parametrize("dims", [(2, 2, 96, 192), (2, 4, 128, 128), (1, 1, 80, 64)],
                         ids=lambda d: "H{}-HV{}-K{}-V{}".format(*d))
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_gluon_prep_prototype_matches_reference(dims, dtype, monkeypatch):
    """On a Hopper GPU (first run: the next device session) the forward's prep in Gluon gives a forward and backward
    as close to the fp64 reference as the Triton prep's (its inverse on fp16 operands at every level, where the Triton
    kernel takes TF32 for the first three), with and without a backward, on packed documents cut short."""
    from hybrid_posttrain.kernels.gdn import chunk
    from hybrid_posttrain.kernels.gdn import prep_gluon as pg

    if pg.gluon is None:
        pytest.skip(f"no Gluon in this Triton: {_gluon().IMPORT_ERROR}")
    H, HV, K, V = dims
    calls, real = [], pg.run
    monkeypatch.setattr(pg, "run", lambda *a, **kw: calls.append(a[12]) or real(*a, **kw))  # a[12]: STORE_AI
    lens = [1, 63, 200, 65, 130, 300]
    cu = torch.tensor([0] + torch.tensor(lens).cumsum(0).tolist(), device=DEV)
    xs = make_inputs(1, sum(lens), H, HV, K, V, dtype, seed=73, n_states=len(lens))
    for grad in (True, False):
        ref = reference(xs, cu=cu, grads=grad)
        monkeypatch.setitem(chunk.CONFIG, "prep_gluon", False)
        base = max(rel(v, ref[n]) for n, v in run(chunk_fn("hpt"), xs, cu=cu, grads=grad).items() if ref[n] is not None)
        monkeypatch.setitem(chunk.CONFIG, "prep_gluon", True)
        calls.clear()
        got = run(chunk_fn("hpt"), xs, cu=cu, grads=grad)
        assert calls and set(calls) == {grad}  # T stored for the backward only
        assert_close(got, ref, max(2 * base, 5e-3), f"{dims} {dtype} grad={grad} (Triton prep: {base:.1e})")


@needs_triton
def test_gluon_wy_only_where_it_can_run(monkeypatch):
    """The backward's Gluon `_bwd_wy` takes a backward only where the Gluon `_bwd_dqk` could, and with T stored as one
    operand (bwd_split_t off); nothing on the CPU calls it."""
    from hybrid_posttrain.kernels.gdn import wy_gluon as wg

    calls = []
    monkeypatch.setattr(wg, "run", lambda *a, **kw: calls.append(a))
    bf = torch.bfloat16
    k, h, d = torch.zeros(64, 2, 96, dtype=bf), torch.zeros(1, 2, 96, 192, dtype=bf), torch.zeros(64, 2, 192, dtype=bf)
    assert not wg.usable(k, d, torch.zeros(64, 2, 64, dtype=bf), h, d, d)  # the CPU
    if wg.gluon is None:
        pytest.skip(f"no Gluon in this Triton: {_gluon().IMPORT_ERROR}")

    def fits(qdt=bf, K=96, V=192, hopper=True, on=True, rb=True, tw=1, same=True):
        return wg.fits(qdt, K, V, hopper, on, rb, tw, same)

    assert fits() and fits(torch.float16) and all(fits(K=k) for k in (64, 80, 96, 128))
    assert not fits(hopper=False) and not fits(on=False) and not fits(rb=False) and not fits(same=False)
    assert not fits(tw=2) and not fits(torch.float32) and not fits(K=32) and not fits(K=256) and not fits(V=96)
    assert wg.slots(96) == 2 and wg.slots(128) == 2
    xs = make_inputs(1, 130, 1, 2, 16, 32, torch.float32, seed=3)
    run(chunk_fn("hpt"), xs)
    assert not calls


@needs_triton
@pytest.mark.parametrize("kname", ["dqk", "wy", "prep"])
def test_gluon_bwd_compiles_for_hopper(kname):
    """The backward's Gluon kernels (and the prototype of the forward's prep) compile for sm_90 without a GPU (Triton's
    bundled ptxas) at their own rules, at four head shapes, and their rules leave room for two programs an SM (shared
    memory)."""
    if _gluon().gluon is None:
        pytest.skip(f"no Gluon in this Triton: {_gluon().IMPORT_ERROR}")
    import os
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    r = subprocess.run([sys.executable, "benchmarks/gluon_bwd.py", "--offline", "--kernel", kname, "--shapes",
                        "qwen,olmo,k64,k80"], cwd=root, env=dict(os.environ, TRITON_INTERPRET="0"),
                       capture_output=True, text=True, timeout=600)
    lines = [x for x in r.stdout.splitlines() if x.startswith(f"gluon_{kname} offline")]
    assert r.returncode == 0 and len(lines) == 4, r.stdout[-2000:] + r.stderr[-2000:]
    for line in lines:
        assert int(re.search(r"(\d+) KB shared", line)[1]) <= 113, line


# the backward's Gluon kernels: module name, CONFIG switch, position of GA in the module's `run`
GLUON_BWD = {"dqk": ("dqk_gluon", 16), "wy": ("wy_gluon", 18)}


@pytest.mark.skipif(not (HAS_TRITON and HOPPER), reason="the Gluon kernel runs on Hopper GPUs only")
@pytest.mark.parametrize("kname", list(GLUON_BWD))
@pytest.mark.parametrize("dims", [(2, 2, 96, 192), (2, 4, 128, 128), (1, 2, 64, 64), (1, 1, 80, 64)],
                         ids=lambda d: "H{}-HV{}-K{}-V{}".format(*d))
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_gluon_bwd_equals_triton_bwd(kname, dims, dtype, monkeypatch):
    """On a Hopper GPU the backward's Gluon kernels (`dqk_gluon.py` for `_bwd_dqk`, `wy_gluon.py` for `_bwd_wy`) give
    every gradient the Triton kernel gives, to the rounding of a different summation order: grouped value heads (dq /
    dk added atomically) or not, packed documents cut short or not, a one-sequence backward in parts, both grid
    orders, with and without the L2 norm, a dk part in fp32 (dkp_fp32), and the other slot count than the rule's.
    Launches of fewer programs an SM than the kernel's CONFIG minimum keep the Triton kernel."""
    import importlib

    from hybrid_posttrain.kernels.gdn import chunk

    name, ga_at = GLUON_BWD[kname]
    mod = importlib.import_module(f"hybrid_posttrain.kernels.gdn.{name}")
    if mod.gluon is None:
        pytest.skip(f"no Gluon in this Triton: {_gluon().IMPORT_ERROR}")
    H, HV, K, V = dims
    monkeypatch.setitem(chunk.CONFIG, f"{name}_min", 0.0)  # every launch, however few its programs
    calls, real = [], mod.run
    monkeypatch.setattr(mod, "run", lambda *a, **kw: calls.append(a[ga_at]) or real(*a, **kw))
    cases = [([1, 63, 200, 65, 130, 300], True, True, False, None), ([64 * 9 + 5], True, True, False, None),
             ([700, 64, 3], False, False, True, 3 - mod.slots(K))]
    for lens, heads_fast, l2, dkp32, nslot in cases:
        monkeypatch.setitem(chunk.CONFIG, "heads_fast", heads_fast)
        monkeypatch.setitem(chunk.CONFIG, "dkp_fp32", dkp32)
        if nslot:  # the other slot count than the rule's
            monkeypatch.setattr(mod, "run", lambda *a, ns=nslot, **kw: calls.append(a[ga_at]) or real(*a, **kw, nslot=ns))
        cu = torch.tensor([0] + torch.tensor(lens).cumsum(0).tolist(), device=DEV)
        xs = make_inputs(1, sum(lens), H, HV, K, V, dtype, seed=71, n_states=len(lens))
        if not l2:  # rows of unit norm, as a model that normalises q and k itself hands them over
            xs = _unit_qk(xs)
        calls.clear()
        monkeypatch.setitem(chunk.CONFIG, name, True)
        got = run(chunk_fn("hpt"), xs, cu=cu, l2=l2)
        assert calls and set(calls) == {HV > H}  # grouped value heads: added atomically
        monkeypatch.setitem(chunk.CONFIG, name, False)
        calls.clear()
        want = run(chunk_fn("hpt"), xs, cu=cu, l2=l2)
        assert not calls
        assert_close(got, want, 2e-3, f"{kname} {dims} {dtype} {lens} l2={l2} dkp_fp32={dkp32} slots={nslot}")
    monkeypatch.setitem(chunk.CONFIG, name, True)
    monkeypatch.setitem(chunk.CONFIG, f"{name}_min", 1e9)  # launches of fewer programs an SM take the Triton kernel
    calls.clear()
    run(chunk_fn("hpt"), xs, cu=cu)
    assert not calls


@needs_triton
def test_output_pairs_only_where_shared_memory_allows(monkeypatch):
    """The output kernel on pairs of chunks takes 104 KB of shared memory at key blocks up to 128 (offline, sm_80 to
    sm_90), more than the 99 KB a program may use on Ada and consumer parts, and at 256 168 KB on sm_90 (152 on
    sm_80; the rule takes the larger, over an A100's 163): there the forward keeps one chunk a program, as on the
    fp32 path."""
    from hybrid_posttrain.kernels.gdn import chunk

    H100, A100, ADA = 232448, 166912, 101376
    for smem, BK, want in ((H100, 128, 2), (H100, 256, 2), (A100, 128, 2), (A100, 256, 1), (ADA, 128, 1), (ADA, 64, 2)):
        monkeypatch.setattr(chunk, "_max_smem", lambda device, smem=smem: smem)
        assert chunk.out_chunks(False, BK, "cuda") == want, (smem, BK)
        assert chunk.out_chunks(True, BK, "cuda") == 1
    seen = _out_chunks_seen(monkeypatch)
    xs = _half(make_inputs(1, 130, 1, 1, 96, 32, torch.float32))
    for smem, want in ((ADA, 1), (H100, 2)):
        monkeypatch.setattr(chunk, "_max_smem", lambda device, smem=smem: smem)
        seen.clear()
        got = run(chunk_fn("hpt"), xs, grads=False)
        assert set(seen) == {want}
        assert_close(got, reference(xs, grads=False), 2e-3, f"shared memory {smem}")
    # any other count is one clear error (the CLI's line and exit status 2) before anything runs
    from hybrid_posttrain.kernels._env import KernelEnvError

    seen.clear()
    for bad in (0, 3):
        monkeypatch.setitem(chunk.CONFIG, "out_chunks", bad)
        with pytest.raises(KernelEnvError, match=f"HPT_GDN_CONFIG: out_chunks={bad}: expected 1 or 2"):
            run(chunk_fn("hpt"), xs, grads=False)
    assert seen == []


@needs_triton
def test_per_chunk_kernels_drop_stages_that_do_not_fit(monkeypatch):
    """A per-chunk kernel whose configured pipeline stages take more shared memory than the device has (Triton
    raises OutOfResources at its first launch: offline, `_bwd_dqk` on 4 stages takes 176 KB on sm_80, over an
    A100's 163) runs on fewer, the count that fit is remembered for the same launch, and a kernel that does not fit
    on one stage still raises."""
    from triton.runtime.errors import OutOfResources

    from hybrid_posttrain.kernels.gdn import chunk

    monkeypatch.setattr(chunk, "_FITTED", {})
    tried = []

    class Kernel:  # stands in for a JIT function: fits on at most `fit` stages
        def __init__(self, name, fit):
            self.__name__, self.fit = name, fit

        def __getitem__(self, grid):
            def launch(*args, num_stages, **kw):
                tried.append(num_stages)
                if num_stages > self.fit:
                    raise OutOfResources(180224, 166912, "shared memory")
                return (grid, args[1:], kw)
            return launch

    x = torch.zeros(1)
    dqk = Kernel("_bwd_dqk", 2)
    assert chunk._run(dqk, (3, 4), x, "a", num_stages=4, num_warps=8, K=96) == ((3, 4), ("a",), dict(num_warps=8, K=96))
    assert tried == [4, 3, 2]
    tried.clear()
    chunk._run(dqk, (3, 4), x, "a", num_stages=4, num_warps=8, K=96)
    chunk._run(dqk, (3, 4), x, "a", num_stages=4, num_warps=8, K=128)  # another launch is tried afresh
    assert tried == [2, 4, 3, 2]
    tried.clear()
    chunk._run(Kernel("_bwd_wy", 4), (1,), x, num_stages=3)
    assert tried == [3]
    # one that does not fit on one stage either: a KernelEnvError naming the kernel and its dims (one line and exit
    # status 2 from the CLI), as is a state pass that does not fit (`_launch`: no stages dropped there)
    from hybrid_posttrain.kernels._env import KernelEnvError

    tried.clear()
    with pytest.raises(KernelEnvError, match=r"^GDN kernel _fwd_out \(K=256, num_warps=4, num_stages=1\) needs 180224 of "
                       r"shared memory, over the 166912 this GPU allows") as e:
        chunk._run(Kernel("_fwd_out", 0), (1,), x, num_stages=2, num_warps=4, K=256)
    assert tried == [2, 1] and "\n" not in str(e.value)
    with pytest.raises(KernelEnvError, match=r"^GDN kernel _bwd_state \(K=256, V=128, BV=64, num_warps=4, "
                       r"num_stages=2\) needs 180224"):
        chunk._launch(Kernel("_bwd_state", 1), (1,), x, num_stages=2, num_warps=4, K=256, V=128, BV=64)
    assert tried[-1] == 2
    assert chunk._launch(Kernel("_bwd_state", 2), (1,), x, "a", num_stages=2) == ((1,), ("a",), {})


@needs_triton
@pytest.mark.parametrize("dims", DIMS, ids=lambda d: "H{}-HV{}-K{}-V{}".format(*d))
def test_fp32_is_not_tf32(dims):
    """fp32 inputs take exact fp32 matrix products: output, state and every gradient within 1e-5 of the
    fp64 recurrence. TF32 (Triton's default for fp32 dots on the GPU) lands near 1e-3 here; the CPU
    interpreter has no TF32, so this is a real check only on the GPU."""
    H, HV, K, V = dims
    xs = make_inputs(2, 200 if CUDA else 65, H, HV, K, V, torch.float32, seed=21)
    assert_close(run(chunk_fn("hpt"), xs), reference(xs), 1e-5, f"fp32 {dims}")


@pytest.mark.parametrize("dims", [(1, 2, 24, 48)], ids=["H1-HV2-K24-V48"])
def test_torch_backend_long(dims):
    H, HV, K, V = dims
    xs = make_inputs(1, 500, H, HV, K, V, torch.float32, seed=5)
    assert_close(run(chunk_fn("torch"), xs), reference(xs), 2e-5, "torch T=500")


@pytest.mark.parametrize("backend", BACKENDS)
def test_varlen_equals_separate(backend):
    H, HV, K, V = DIMS[-1]
    lens = [1, 63, 65, 17] if not CUDA else [1, 63, 65, 17, 300, 64]
    cu = torch.tensor([0] + torch.tensor(lens).cumsum(0).tolist(), device=DEV)
    xs = make_inputs(1, sum(lens), H, HV, K, V, torch.float32, seed=3, n_states=len(lens))
    fn = chunk_fn(backend)
    do = torch.randn(1, sum(lens), HV, V, device=DEV)
    dht = torch.randn(len(lens), HV, K, V, device=DEV)
    packed = run(fn, xs, cu=cu, do=do, dht=dht)
    for i, (a, b) in enumerate(zip(cu[:-1].tolist(), cu[1:].tolist())):
        sep = [x[:, a:b] for x in xs[:5]] + [xs[5][i:i + 1]]
        one = run(fn, sep, do=do[:, a:b], dht=dht[i:i + 1])
        for n in ["o", "dq", "dk", "dv", "dg", "dbeta"]:
            assert rel(packed[n][:, a:b], one[n]) < 1e-5, (n, i)
        assert rel(packed["ht"][i], one["ht"][0]) < 1e-5
        assert rel(packed["dh0"][i], one["dh0"][0]) < 1e-5
    # and against the reference
    assert_close(packed, reference(xs, cu=cu, do=do, dht=dht), TOL[(backend, torch.float32)], "varlen")


@pytest.mark.parametrize("backend", BACKENDS)
def test_strong_decay_with_partial_chunks_stays_finite(backend):
    """Trained GDN layers decay hard (g of -5 per token: -320 over a 64-token chunk). A chunk cut short by a
    document end has padding rows; an exponent exp(g_i - g_j) built across a valid and a padding row must
    not overflow into 0 * inf = NaN in the valid rows' gradients (the packed-row NaN seen on the H100)."""
    H, HV, K, V = DIMS[-1]
    lens = [70, 33, 64]
    cu = torch.tensor([0] + torch.tensor(lens).cumsum(0).tolist(), device=DEV)
    xs = make_inputs(1, sum(lens), H, HV, K, V, torch.float32, seed=5, n_states=len(lens))
    xs[3] = torch.full_like(xs[3], -5.0)
    got = run(chunk_fn(backend), xs, cu=cu)
    for n in ["o", "dq", "dk", "dv", "dg", "dbeta", "dh0"]:
        assert torch.isfinite(got[n]).all(), n
    # dg sums cumulative decays of -5 per token: a little worse conditioned than the default budget
    assert_close(got, reference(xs, cu=cu), 1e-4, "strong decay")


@pytest.mark.parametrize("backend", BACKENDS)
def test_nearly_parallel_keys_with_beta_near_two(backend):
    """Keys of a chunk that nearly share one direction (repeated or similar tokens: common in trained
    layers) with beta near 2 make (I + A) close to singular inside a 16-row block: the entries of A^8 reach
    1e5 while (I + A)^-1 stays near 1. The power-series inverse (I - A)(I + A^2)(I + A^4)(I + A^8) used
    before cancels those large terms: here it was 8e-2 (o) to 2.5e-1 (dbeta) off in fp32, and useless in TF32
    (the NaN of v5c in training); block forward substitution keeps fp32 accuracy."""
    H, HV, K, V = DIMS[0]
    T = 130
    xs = _nearly_parallel(make_inputs(1, T, H, HV, K, V, torch.float32, seed=7), T, H, HV, K)
    got = run(chunk_fn(backend), xs)
    assert_close(got, reference(xs), 1e-4, "nearly parallel keys")


@pytest.mark.skipif(not CUDA, reason="bf16 at full head sizes needs the GPU (the interpreter's bf16 is unusable)")
def test_varlen_bf16_full_heads_on_gpu():
    """Packed documents in bf16 at Olmo head sizes (K=96, V=192), lengths not multiples of 64, against the
    torch kernel. Session 2 saw NaN gradients for such rows in the 1.33B train step with the hpt kernel
    (benchmarks/NOTES_gdn.md; cause found on the CPU: test_strong_decay_with_partial_chunks_stays_finite);
    this passing on the H100 is why packed GPU rows run hpt by default (models/hybrid.py)."""
    lens = [1777, 906, 2235, 130]
    H, HV, K, V = 4, 4, 96, 192
    cu = torch.tensor([0] + torch.tensor(lens).cumsum(0).tolist(), device=DEV)
    xs = make_inputs(1, sum(lens), H, HV, K, V, torch.bfloat16, seed=11)
    xs[3] = xs[3] * 40.0  # hard decays as in a trained layer (exp of a chunk's decay span overflows fp32)
    do = torch.randn(1, sum(lens), HV, V, device=DEV)

    def grads(backend, dtype):
        q, k, v, g, beta = [x.detach().to(dtype if x.dtype == torch.bfloat16 else x.dtype).requires_grad_()
                            for x in xs[:5]]
        o, _ = chunk_fn(backend)(q, k, v, g, beta, cu_seqlens=cu, use_qk_l2norm_in_kernel=True)  # no state, as in training
        (o.float() * do).sum().backward()
        return dict(o=o.detach(), dq=q.grad, dk=k.grad, dv=v.grad, dg=g.grad, dbeta=beta.grad)

    got, want = grads("hpt", torch.bfloat16), grads("torch", torch.float32)
    for n in ["o", "dq", "dk", "dv", "dg", "dbeta"]:
        assert torch.isfinite(got[n]).all(), n
        assert rel(got[n], want[n]) < 2e-2, n


SMALL_DIMS = [(1, 2, 16, 16), (1, 2, 32, 32), (2, 2, 64, 32), (1, 1, 96, 32), (1, 2, 24, 48)]


@needs_triton
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).split(".")[-1])
@pytest.mark.parametrize("dims", SMALL_DIMS if CUDA else SMALL_DIMS[:1], ids=lambda d: "H{}-HV{}-K{}-V{}".format(*d))
def test_small_value_dims(dims, dtype, monkeypatch):
    """Value dims under 64 run on CUDA padded with zero columns (`_v_padded`): on the H100 with Triton 3.6, 16 and 32
    gave wrong outputs and states or illegal memory accesses (session 16). Output, state and every gradient against
    the fp64 recurrence, packed documents, at the shapes tiny test models use; on the CPU the padding is forced."""
    from hybrid_posttrain.kernels.gdn import chunk

    H, HV, K, V = dims
    # the rule: padded on CUDA only, and never below the value dim
    assert chunk._v_padded(V, torch.device("cuda")) == max(V, 64) and chunk._v_padded(V, torch.device("cpu")) == V
    assert chunk._v_padded(96, torch.device("cuda")) == 96
    if not CUDA:
        monkeypatch.setattr(chunk, "_v_padded", lambda V, device: max(V, 64))
    ran, real_fwd = [], chunk._fwd

    def fwd(q, k, v, *a, **kw):  # the value dim the kernels ran at
        ran.append(v.shape[-1])
        return real_fwd(q, k, v, *a, **kw)

    monkeypatch.setattr(chunk, "_fwd", fwd)
    cu = torch.tensor([0, 1, 64, 130, 200], device=DEV)
    xs = make_inputs(1, 200, H, HV, K, V, dtype, seed=K + V, n_states=4)
    got, ref = run(chunk_fn("hpt"), xs, cu=cu), reference(xs, cu=cu)
    assert ran == [max(V, 64)]
    assert got["o"].shape[-1] == V and got["ht"].shape[-1] == V and got["o"].is_contiguous()
    assert_close(got, ref, TOL[("hpt", dtype)], f"{dims}")


WIDE_DIMS = [(1, 2, 256, 128), (2, 2, 192, 64)] if CUDA else [(1, 2, 160, 16)]


@needs_triton
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).split(".")[-1])
@pytest.mark.parametrize("dims", WIDE_DIMS, ids=lambda d: "H{}-HV{}-K{}-V{}".format(*d))
def test_key_dims_over_128(dims, dtype):
    """Key dims of 129-256 (a 256-wide key block), which the API accepts: output, state and every gradient against
    the fp64 recurrence, for a batch and for one sequence (on the GPU: few programs, so other state-pass settings).
    On the H100 the bf16 backward state pass at K = 256 took 249 KB of shared memory on its old V block (offline)
    and could not launch: it now takes V block 32 (`bstate_bv_wide`)."""
    H, HV, K, V = dims
    # (the fp32 path's [64, 256] products on FMA units keep ~16-24 KB a thread on the stack: 145-205 s on the H100 for
    # both cases, so one there)
    for B, T in ((2, 130), (1, 300))[:1 if CUDA and dtype == torch.float32 else 2]:
        xs = make_inputs(B, T, H, HV, K, V, dtype, seed=K + T)
        assert_close(run(chunk_fn("hpt"), xs), reference(xs), TOL[("hpt", dtype)], f"{dims} {B}x{T}")


@needs_triton
def test_without_initial_or_final_state():
    H, HV, K, V = DIMS[-1]
    q, k, v, g, beta, _ = make_inputs(1, 65, H, HV, K, V, torch.float32, seed=7)
    q, k = gdn.l2norm(q), gdn.l2norm(k)  # unit keys keep the recurrence stable without the in-kernel norm
    o, ht = gdn.chunk_gated_delta_rule(q, k, v, g, beta, use_qk_l2norm_in_kernel=False, scale=0.3)
    ro, _ = naive(*[x.double() for x in (q, k, v, g, beta)], scale=0.3)
    assert ht is None
    assert rel(o, ro) < TOL[("hpt", torch.float32)]


@needs_triton
@pytest.mark.parametrize("dims", DIMS + ([(1, 2, 32, 32)] if CUDA else []), ids=lambda d: "H{}-HV{}-K{}-V{}".format(*d))
def test_decode_loop_matches_prefill(dims):
    H, HV, K, V = dims
    T0, n_dec = 65, 5
    q, k, v, g, beta, h0 = make_inputs(2, T0 + n_dec, H, HV, K, V, torch.float32, seed=11)
    with torch.no_grad():
        full, full_ht = gdn.chunk_gated_delta_rule(q, k, v, g, beta, initial_state=h0,
                                                   output_final_state=True, use_qk_l2norm_in_kernel=True)
        pre, state = gdn.chunk_gated_delta_rule(q[:, :T0], k[:, :T0], v[:, :T0], g[:, :T0], beta[:, :T0],
                                                initial_state=h0, output_final_state=True,
                                                use_qk_l2norm_in_kernel=True)
        state = state.contiguous()
        ptr = state.data_ptr()
        from hybrid_posttrain.kernels.gdn import fused_recurrent

        fused_recurrent._even_cu.cache_clear()
        outs = []
        for t in range(T0, T0 + n_dec):
            sl = slice(t, t + 1)
            o, st = gdn.fused_recurrent_gated_delta_rule(q[:, sl], k[:, sl], v[:, sl], g[:, sl], beta[:, sl],
                                                         initial_state=state, output_final_state=True,
                                                         use_qk_l2norm_in_kernel=True, inplace_final_state=True)
            assert st.data_ptr() == ptr  # updated in place
            outs.append(o)
    tol = TOL[("hpt", torch.float32)]
    assert rel(pre, full[:, :T0]) < tol
    assert rel(torch.cat(outs, 1), full[:, T0:]) < tol
    assert rel(state, full_ht) < tol
    # every step took the one bounds tensor of a [2, 1] batch: made at the first step, remembered for the others, and
    # left as it was by the kernel
    info = fused_recurrent._even_cu.cache_info()
    assert (info.misses, info.hits) == (1, n_dec - 1)
    assert fused_recurrent._even_cu(2, 1, q.device).tolist() == [0, 1, 2]


@needs_triton
def test_decode_makes_its_bounds_afresh_while_a_cuda_graph_is_captured(monkeypatch):
    """While a CUDA graph is captured, a decode step makes its batch's bounds in the graph and leaves the remembered
    ones alone (made then, they would hold nothing until a replay and be freed with the graph); outside, it takes
    the remembered ones. Capture is simulated (`_capturing`), so this runs on the CPU too."""
    from hybrid_posttrain.kernels.gdn import fused_recurrent

    H, HV, K, V = CPU_DIMS[0]
    q, k, v, g, beta, h0 = make_inputs(3, 1, H, HV, K, V, torch.float32, seed=2)
    made, bounds = [], fused_recurrent._bounds

    def counted(*a):
        made.append(a)
        return bounds(*a)

    monkeypatch.setattr(fused_recurrent, "_bounds", counted)
    fused_recurrent._even_cu.cache_clear()
    want, _ = naive(q, k, v, g, beta, initial_state=h0)
    for capturing in (True, False, False):
        monkeypatch.setattr(fused_recurrent, "_capturing", lambda x, c=capturing: c)
        with torch.no_grad():
            o, _ = gdn.fused_recurrent_gated_delta_rule(q, k, v, g, beta, initial_state=h0)
        assert rel(o, want) < TOL[("hpt", torch.float32)]
    # made in the captured step, then once outside it and remembered for the third
    assert len(made) == 2 and fused_recurrent._even_cu.cache_info().currsize == 1


@needs_triton
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=lambda d: str(d).split(".")[-1])
@pytest.mark.parametrize("dims", [(1, 2, 32, 32), (1, 1, 96, 32), (2, 4, 128, 128)] if CUDA else [(1, 2, 16, 16)],
                         ids=lambda d: "H{}-HV{}-K{}-V{}".format(*d))
def test_decode_in_half_precision(dims, dtype):
    """Token-by-token decode in bf16 / fp16 (the fp32 state updated each step) against the fp64 recurrence: output
    and state, at small value dims too, which the decode kernel runs unpadded (the chunked path pads them on CUDA:
    `_v_padded`). H100 (session 16, call 16): o 1.6e-3 to 1.7e-3 in bf16, 2e-4 in fp16, state 1e-7."""
    H, HV, K, V = dims
    xs = make_inputs(2, 6, H, HV, K, V, dtype, seed=3)
    q, k, v, g, beta, state = xs
    outs = []
    with torch.no_grad():
        for t in range(6):
            sl = slice(t, t + 1)
            o, state = gdn.fused_recurrent_gated_delta_rule(q[:, sl], k[:, sl], v[:, sl], g[:, sl], beta[:, sl],
                                                            initial_state=state, output_final_state=True,
                                                            use_qk_l2norm_in_kernel=True)
            assert o.dtype == dtype and state.dtype == torch.float32
            outs.append(o)
    ref = reference(xs, grads=False)
    assert rel(torch.cat(outs, 1), ref["o"]) < 1e-2 and rel(state, ref["ht"]) < 1e-5


@needs_triton
def test_fused_recurrent_varlen_matches_recurrence():
    H, HV, K, V = DIMS[-1]
    lens = [1, 3, 7]
    cu = torch.tensor([0, 1, 4, 11], device=DEV)
    xs = make_inputs(1, sum(lens), H, HV, K, V, torch.float32, seed=13, n_states=3)
    got = run(gdn.fused_recurrent_gated_delta_rule, xs, cu=cu, grads=False)
    ref = reference(xs, cu=cu, grads=False)
    assert_close(got, ref, TOL[("hpt", torch.float32)], "fused recurrent varlen")


def test_comparison_can_fail():
    """The checks above reject a 1% error and NaN."""
    x = torch.randn(100, dtype=torch.float64)
    assert rel(x * 1.01, x) > 5e-3
    assert rel(torch.full_like(x, float("nan")), x) == float("inf")


def test_backend_switch():
    assert "torch" in gdn.available_backends() and "auto" in gdn.available_backends()
    with pytest.raises(ValueError, match="unknown kernel backend"):
        gdn.get_gdn_fns("nope")
    chunk, rec = gdn.get_gdn_fns("torch")
    assert chunk is gdn.torch_chunk_gated_delta_rule
    auto = gdn.get_gdn_fns("auto")[0]
    if CUDA and HAS_TRITON:
        assert gdn.resolve_backend("auto") == "hpt" and auto is not chunk
    else:
        assert gdn.resolve_backend("auto") == "torch" and auto is chunk
    if importlib.util.find_spec("fla") is None:
        with pytest.raises(RuntimeError, match="pip install flash-linear-attention"):
            gdn.get_gdn_fns("fla")


def test_override_types_follow_the_defaults():
    """A launch-setting override must have its default's type, except that a whole number stands for a float
    (JSON `0` for a threshold of `0.0`), taken as that float; bools and ints are never taken for each other."""
    from hybrid_posttrain.kernels._env import KernelEnvError, check_overrides, override_list

    config = {"stages": 2, "fuse_min": 3.0, "fused": True}
    got = check_overrides("X", {"fuse_min": 0}, config)
    assert got == {"fuse_min": 0.0} and type(got["fuse_min"]) is float
    assert override_list("--sweep", '[{"fuse_min": 1}, {"stages": 3}]', config) == [{"fuse_min": 1.0}, {"stages": 3}]
    for bad in ({"stages": 2.0}, {"stages": True}, {"fused": 1}, {"fuse_min": True}, {"fuse_min": "3"}):
        with pytest.raises(KernelEnvError, match=f"X: {next(iter(bad))}="):
            check_overrides("X", bad, config)


@needs_triton
@pytest.mark.parametrize("module, env, msg", [
    ("gdn.chunk", {"HPT_GDN_CONFIG": "{bv: 32"}, "HPT_GDN_CONFIG is not JSON"),
    ("gdn.chunk", {"HPT_GDN_CONFIG": '{"bstate_wraps": 4}'}, "HPT_GDN_CONFIG: expected an object with keys among"),
    ("gdn.chunk", {"HPT_GDN_FP32_DOT": "fp64"}, "HPT_GDN_FP32_DOT='fp64': expected ieee"),
    ("gdn.chunk", {"HPT_GDN_CONFIG": '{"bv": "32"}'}, 'HPT_GDN_CONFIG: bv="32": expected int like the default 32'),
    ("gdn.chunk", {"HPT_GDN_CONFIG": '{"group_atomic": 1}'}, "HPT_GDN_CONFIG: group_atomic=1: expected bool"),
    ("gdn.chunk", {"HPT_GDN_CONFIG": '{"bstate_fuse_min": "3"}'}, 'bstate_fuse_min="3": expected float'),
    ("conv", {"HPT_CONV_CONFIG": "[16]"}, "HPT_CONV_CONFIG: expected an object with keys among bt, bc, warps"),
    ("conv", {"HPT_CONV_CONFIG": '{"wraps": 4}'}, "HPT_CONV_CONFIG: expected an object with keys among"),
    ("_launch", {"HPT_LAUNCH_CONFIG": '{"direct": 0}'}, "HPT_LAUNCH_CONFIG: direct=0: expected bool like the default"),
])
def test_bad_kernel_environment_is_a_clear_error(module, env, msg):
    """The kernels' environment knobs: a typo names itself instead of failing later in a compile or being
    ignored; through the CLI it is one line and exit status 2 (here the kernel module is imported by a command
    the way `hpt train` imports it: lazily, inside the command)."""
    import os
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", f"import hybrid_posttrain.kernels.{module}"], capture_output=True,
                         text=True, timeout=120, env={**os.environ, **env})
    assert out.returncode != 0 and msg in out.stderr.strip().splitlines()[-1], out.stderr[-1000:]
    code = ("import sys; from hybrid_posttrain import cli; "
            f"cli.COMMANDS['doctor'] = 'hybrid_posttrain.kernels.{module}:__name__'; sys.exit(cli.main(['doctor', 'x']))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, **env})
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: ") and msg in lines[0], out.stderr


@needs_triton
def test_state_pass_value_blocks_fill_the_gpu(monkeypatch):
    """The state passes run one program per sequence, value head and V block. With few long sequences the
    forward takes 3 pipeline stages and halves its V block while the grid stays within one program per SM;
    a grid that fills the GPU keeps the configured block on 2 stages; the fp32 forward halves until the grid
    covers the SMs. The backward halves only while the halved grid still fits in one wave, and takes 3
    stages where the key dim is a power of two, or (on 8 warps) where a padded one runs the one-block pass on
    fewer programs than SMs. 132 SMs and 227 KB of shared memory as on the H100."""
    from hybrid_posttrain.kernels.gdn import chunk

    monkeypatch.setattr(chunk, "_n_sm", lambda device: 132)
    monkeypatch.setattr(chunk, "_max_smem", lambda device: 232448)  # 227 KB
    want = {  # (K, V, sequences x value heads): ((V block, stages) forward, backward, fp32 forward)
        (96, 192, 30): ((64, 3), (64, 3), (32, 2)),    # Olmo-Hybrid 1 x 32768: 90 programs
        (96, 192, 60): ((64, 2), (64, 2), (32, 2)),    # Olmo-Hybrid 2 x 4096: 180
        (96, 192, 240): ((64, 2), (64, 2), (32, 2)),   # Olmo-Hybrid 8 x 4096
        (128, 128, 32): ((32, 3), (32, 3), (16, 2)),   # Qwen3-Next 1 x 32768: 64 -> 128 programs
        (128, 128, 64): ((64, 3), (64, 3), (32, 2)),   # Qwen3-Next 2 x 4096: 128 programs
        (128, 128, 256): ((64, 2), (64, 3), (32, 2)),  # Qwen3-Next 8 x 4096
        (64, 96, 2): ((16, 3), (16, 3), (16, 2)),      # a test shape: the smallest block
    }
    for (K, V, n), (fwd, bwd, f32) in want.items():
        L, L32 = chunk.launches(K, V, False, n, "cuda"), chunk.launches(K, V, True, n, "cuda")
        got = ((L["_fwd_state"][0], L["_fwd_state"][2]), (L["_bwd_state"][0], L["_bwd_state"][2]),
               (L32["_fwd_state"][0], L32["_fwd_state"][2]))
        assert got == (fwd, bwd, f32), (K, V, n)
        # the one-block backward with a padded key block on fewer programs than SMs runs 8 warps, else 4
        assert L["_bwd_state"][1] == (8 if (K, n) == (96, 30) else 4), (K, V, n)
        assert chunk.bstate_kernel(K, n * V // L["_bwd_state"][0], "cuda")[0] is (
            chunk._bwd_state_ks if (K, n) in ((96, 60), (96, 240)) else chunk._bwd_state), (K, V, n)
    # devices with less shared memory than 3 stages take keep the 2-stage settings where they do not fit
    # (A100: 163 KB, the backward's 202 KB does not; a 99 KB part: neither)
    for smem, fwd, bwd in ((166912, (32, 3), (32, 2)), (101376, (16, 2), (32, 2))):
        monkeypatch.setattr(chunk, "_max_smem", lambda device, smem=smem: smem)
        L = chunk.launches(128, 128, False, 32, "cuda")
        assert ((L["_fwd_state"][0], L["_fwd_state"][2]), (L["_bwd_state"][0], L["_bwd_state"][2])) == (fwd, bwd)
    # the backward's 8 warps on 3 stages at Olmo-Hybrid 1 x 32768 take 210 KB: a device with 205 KB keeps 4 / 2
    monkeypatch.setattr(chunk, "_max_smem", lambda device: 210000)
    assert chunk.launches(96, 192, False, 30, "cuda")["_bwd_state"][:3] == (64, 4, 2)
    assert chunk.launches(96, 192, False)["_bwd_state"][0] == 64  # no sequence count: the configured block
    # key blocks over 128 (K 129-256): the backward state pass on V block 32 and 8 warps on the bf16 / fp16 path,
    # where 64 would take 249 KB at K = 256 (offline, sm_90); the fp32 path (one stage, 208 KB) and K <= 128 keep
    # theirs
    monkeypatch.setattr(chunk, "_max_smem", lambda device: 232448)
    for K, n, bv, bv32 in ((256, 8, 16, 16), (256, 512, 32, 64), (192, 8, 16, 16), (160, 512, 32, 64)):
        assert chunk.launches(K, 128, False, n, "cuda")["_bwd_state"][:2] == (bv, 8), (K, n)  # few programs: halved
        assert chunk.launches(K, 128, True, n, "cuda")["_bwd_state"][:3] == (bv32, 8, 1), (K, n)
    assert chunk.launches(256, 16, False, 512, "cuda")["_bwd_state"][:2] == (16, 8)  # never wider than V
    assert chunk.launches(128, 128, False, 512, "cuda")["_bwd_state"][:2] == (64, 4)
    # the prep's register cap applies on the bf16 / fp16 path only (the fp32 one runs 8 warps and would spill)
    monkeypatch.setitem(chunk.CONFIG, "prep64_maxnreg", 168)
    assert chunk.launches(96, 192, False)["_fwd_prep64"][3] == 168
    assert chunk.launches(96, 192, True)["_fwd_prep64"][3] is None
    monkeypatch.setitem(chunk.CONFIG, "prep64_maxnreg", 0)
    assert chunk.launches(96, 192, False)["_fwd_prep64"][3] is None


@pytest.mark.skipif(not HAS_TRITON, reason="needs triton")
def test_host_helpers_match_triton_and_launches_are_remembered_per_setting(monkeypatch):
    """The driver's host arithmetic (`_cdiv`, `_np2`) gives Triton's results, and `launches` (remembered per
    arguments, settings and device facts) hands out a copy: changing it changes no later call, while a changed
    setting does."""
    import triton

    from hybrid_posttrain.kernels.gdn import chunk

    for a in range(0, 300):
        for b in (1, 7, 16, 64):
            assert chunk._cdiv(a, b) == triton.cdiv(a, b), (a, b)
        if a:
            assert chunk._np2(a) == triton.next_power_of_2(a), a
    L = chunk.launches(96, 192, False)
    L["_bwd_wy"] = None
    assert chunk.launches(96, 192, False)["_bwd_wy"] is not None
    monkeypatch.setitem(chunk.CONFIG, "bchunk_warps", 4)
    assert chunk.launches(96, 192, False)["_bwd_wy"][1] == 4


@pytest.mark.skipif(not HAS_TRITON, reason="needs triton")
def test_cu_seqlens_are_read_once_per_tensor_and_version(monkeypatch):
    """cu_seqlens' values are read from the tensor (a wait for the GPU where it lives there) once per tensor object
    and version, so that a model's GDN layers, which all get its batch's one tensor, wait once; an in-place change
    and another tensor are read again, and inference tensors (no version) every time."""
    from hybrid_posttrain.kernels.gdn import chunk

    reads = []
    tolist = torch.Tensor.tolist

    def counted(self):
        reads.append(1)
        return tolist(self)

    monkeypatch.setattr(torch.Tensor, "tolist", counted)
    cu = torch.tensor([0, 3, 7], dtype=torch.int32)
    assert chunk._cu_values(cu) == (0, 3, 7) and chunk._cu_values(cu) == (0, 3, 7)
    assert len(reads) == 1
    cu[1] = 5
    assert chunk._cu_values(cu) == (0, 5, 7) and len(reads) == 2
    other = cu.clone()
    assert chunk._cu_values(other) == (0, 5, 7) and len(reads) == 3
    with torch.inference_mode():
        inf = torch.tensor([0, 2, 4])
    assert chunk._cu_values(inf) == (0, 2, 4) and chunk._cu_values(inf) == (0, 2, 4) and len(reads) == 5
    # through the public function: the second call with the same tensor reads nothing, and the result is right
    args = tuple(x.to(DEV) for x in (torch.randn(1, 7, 1, 16), torch.randn(1, 7, 1, 16), torch.randn(1, 7, 2, 16),
                                     -torch.rand(1, 7, 2), torch.rand(1, 7, 2)))
    cu2 = torch.tensor([0, 3, 7], dtype=torch.int32, device=DEV)
    reads.clear()
    with torch.no_grad():
        o1, _ = chunk.chunk_gated_delta_rule(*args, cu_seqlens=cu2)
        o2, _ = chunk.chunk_gated_delta_rule(*args, cu_seqlens=cu2)
        cu2[1] = 4
        o3, _ = chunk.chunk_gated_delta_rule(*args, cu_seqlens=cu2)
    assert len(reads) == 2
    want3, _ = naive(*args, cu_seqlens=cu2)
    assert torch.equal(o1, o2)
    assert torch.allclose(o3, want3, atol=1e-4, rtol=1e-4)


@pytest.mark.skipif(not HAS_TRITON, reason="needs triton")
def test_wy_stages_follow_the_value_blocks(monkeypatch):
    """`_bwd_wy` runs bchunk_stages_2vb (4) where V spans at most two of its V blocks on the bf16 / fp16 path
    (Qwen3-Next's 128: faster on the H100), bchunk_stages (3) over three (Olmo-Hybrid's 192: 4 were slower) and on
    the fp32 path; _bwd_dqk keeps its own."""
    from hybrid_posttrain.kernels.gdn import chunk

    assert chunk.launches(128, 128, False)["_bwd_wy"][2] == 4
    assert chunk.launches(96, 192, False)["_bwd_wy"][2] == 3
    assert chunk.launches(128, 128, True)["_bwd_wy"][2] == 3
    assert chunk.launches(128, 128, False)["_bwd_dqk"][2] == chunk.CONFIG["dqk_stages"]
    monkeypatch.setitem(chunk.CONFIG, "bchunk_stages_2vb", 2)
    assert chunk.launches(128, 128, False)["_bwd_wy"][2] == 2


@needs_triton
def test_gate_gradients_come_in_their_inputs_dtypes():
    """dbeta is stored in beta's dtype and dg in g's by the kernel, which rounds its fp32 values once: a bf16 beta's
    gradient is the fp32 path's rounded to bf16 (the same values of beta, held in fp32), exactly on the GPU (round to
    nearest even, as torch's conversion); the interpreter truncates in its fp32 -> bf16 casts, so there within one
    bf16 step. dg is the same."""
    q, k, v, g, beta, _ = make_inputs(1, 70, 1, 2, 16, 32, torch.float32, seed=5)
    beta = beta.bfloat16()
    got = {}
    for bdt in (torch.bfloat16, torch.float32):
        xs = [x.detach().requires_grad_(True) for x in (q, k, v, g, beta.to(bdt))]
        o, _ = gdn.chunk_gated_delta_rule(*xs, use_qk_l2norm_in_kernel=True)
        got[bdt] = torch.autograd.grad(o, xs, torch.ones_like(o))
    d16, d32 = got[torch.bfloat16], got[torch.float32]
    assert d16[4].dtype == torch.bfloat16 and d16[3].dtype == torch.float32 and d32[4].dtype == torch.float32
    if CUDA:
        assert torch.equal(d16[4], d32[4].bfloat16())
    else:
        assert ((d16[4].float() - d32[4]).abs() <= 2.0**-7 * d32[4].abs()).all()  # under one bf16 step
    assert (d16[4].float() != d32[4]).any()  # rounded, not held in fp32
    assert torch.equal(d16[3], d32[3])


@pytest.mark.skipif(not CUDA, reason="CUDA graphs: GPU only")
def test_decode_step_replays_in_a_cuda_graph():
    """A decode step captured in a CUDA graph (the usual cure for a step's host time) replays with new inputs in
    the captured buffers to the eager steps' outputs and state, bit for bit, and eager steps after the capture still
    see right bounds."""
    H, HV, K, V = 2, 4, 128, 128
    B, steps = 3, 4
    xs = make_inputs(B, steps, H, HV, K, V, torch.bfloat16, seed=8)
    q, k, v, g, beta, h0 = xs

    def step(i, state):
        sl = slice(i, i + 1)
        return gdn.fused_recurrent_gated_delta_rule(q[:, sl], k[:, sl], v[:, sl], g[:, sl], beta[:, sl],
                                                    initial_state=state, output_final_state=True,
                                                    use_qk_l2norm_in_kernel=True, inplace_final_state=True)[0]

    with torch.no_grad():
        eager_state = h0.float().contiguous().clone()
        eager = [step(i, eager_state).clone() for i in range(steps)]
        ins = [x[:, :1].clone() for x in (q, k, v, g, beta)]
        state = h0.float().contiguous().clone()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up on a side stream, as torch's CUDA graph notes ask
            gdn.fused_recurrent_gated_delta_rule(*ins, initial_state=state.clone(), output_final_state=True,
                                                 use_qk_l2norm_in_kernel=True, inplace_final_state=True)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out, _ = gdn.fused_recurrent_gated_delta_rule(*ins, initial_state=state, output_final_state=True,
                                                          use_qk_l2norm_in_kernel=True, inplace_final_state=True)
        state.copy_(h0.float())  # capture ran nothing: start from h0
        for i in range(steps):
            for buf, x in zip(ins, (q, k, v, g, beta)):
                buf.copy_(x[:, i:i + 1])
            graph.replay()
            assert torch.equal(out, eager[i]), i
        assert torch.equal(state, eager_state)
        again_state = h0.float().contiguous().clone()
        assert torch.equal(step(0, again_state), eager[0])  # eager after the capture
