"""Chunked gated delta rule in Triton: forward and backward (WY/UT representation).

Algorithm (per value head, chunks of BT=64 tokens, h = the [K, V] state entering a chunk, gc = the
chunk-local cumulative sum of g):
    A_ij   = beta_i exp(gc_i - gc_j) k_i.k_j  (i > j),  T = (I + A)^-1  (block forward substitution)
    w      = T (beta exp(gc) k),  u = T (beta v)         [kernel _fwd_prep64, or _fwd_prep for K <= 32]
    delta  = u - w h ;  h' = exp(gc_L) h + (k exp(gc_L - gc))^T delta  [kernel _fwd_state]
    o      = scale (q exp(gc)) h + scale (q k^T * exp(gc_i - gc_j), i >= j) delta  [kernel _fwd_out, on pairs of
             chunks (128 tokens, gc continued across the pair) from the state entering the pair: `out_chunks`; on
             Hopper GPUs in half precision its Gluon twin, out_gluon.py, CONFIG out_gluon]
Backward: one reverse pass over chunks for dh and d(delta) [_bwd_state], then one kernel per chunk for
dq, dk, dv, dbeta, dg (through the WY form and T) [_bwd_dqk, _bwd_wy; on Hopper GPUs in half precision their
Gluon twins dqk_gluon.py and wy_gluon.py, CONFIG dqk_gluon / wy_gluon].

Sequences are always handled packed (B*T tokens, or cu_seqlens), chunks never cross a sequence end. One
sequence whose state pass leaves SMs free runs its forward (`_fwd`) and its backward (`_bwd`) in parts: each
part's state pass on a second stream while the other parts' per-chunk kernels run.
Value head hv reads q/k head hv // (HV // H). K and V need not be powers of two.
"""

from __future__ import annotations

import contextlib
import functools
import os
import weakref
from typing import NamedTuple

import torch
import triton
import triton.language as tl
from triton.runtime.errors import OutOfResources

from hybrid_posttrain.kernels._env import KernelEnvError, env_config
from hybrid_posttrain.kernels._host import cdiv as _cdiv
from hybrid_posttrain.kernels._host import np2 as _np2
from hybrid_posttrain.kernels._launch import launch

from . import dqk_gluon, out_gluon, prep_gluon, wy_gluon

__all__ = ["chunk_gated_delta_rule", "ChunkGatedDeltaRuleFunction"]

BT = 64  # chunk size (fixed: the inverse is merged from four 16x16 blocks)
_BT = tl.constexpr(BT)  # the same, for use inside kernels

# Tests set this (or HPT_GDN_POISON=1) so that every buffer starts as NaN: unwritten memory then fails.
POISON = os.environ.get("HPT_GDN_POISON", "0") not in ("", "0")


# Precision of the fp32 path's matrix products: "ieee" (exact fp32, the default), or "tf32x3" / "tf32"
# (tensor cores; faster, 3e-4 relative error for "tf32"), from HPT_GDN_FP32_DOT at import.
_FP32_DOT = os.environ.get("HPT_GDN_FP32_DOT", "ieee")
if _FP32_DOT not in ("ieee", "tf32x3", "tf32"):
    raise KernelEnvError(f"HPT_GDN_FP32_DOT={_FP32_DOT!r}: expected ieee, tf32x3 or tf32")
_FP32_DOT = tl.constexpr(_FP32_DOT)

# Launch settings (benchmarks sweep them; HPT_GDN_CONFIG='{"bv": 32, ...}' overrides at import).
CONFIG = {
    "bv": 32,  # value-dim block of _fwd_prep's u = T (beta v)
    "state_bv": 64,  # value-dim block of the forward state recurrence (fp32: at most 32)
    # the state passes' V block is halved down to this when the grid leaves SMs idle (_state_bv,
    # _fwd_state_launch). H100 (session 6, 2 stages): 16 against 32, Qwen3-Next 1x32768 `_fwd_state` 1.060 ->
    # 0.938 ms (128 -> 256 programs); on 3 stages (session 10) 32 is faster: 0.811 -> 0.695
    "state_bv_min": 16,
    "out_bv": 64,
    # chunks a `_fwd_out` program covers (1 or 2; the fp32 path: 1): with 2 it reads the state of every other chunk
    # only, and where no backward follows the state pass stores only those (`_fwd_out`, `_groups`). H100 (session
    # 15, call 2), fwd 1 -> 2: Olmo-Hybrid 8x4096 1.908 -> 1.788 ms (no-grad `_fwd_state` 0.687 -> 0.598, `_fwd_out`
    # 0.622 -> 0.585), Qwen3-Next 8x4096 1.607 -> 1.531 (0.527 -> 0.442, 0.495 -> 0.494), 1x32768 1.856 -> 1.826 /
    # 1.650 -> 1.572; fwd+bwd (every state stored) 5.763 -> 5.720 / 5.506 -> 5.515, 5.980 -> 5.913 / 5.706 -> 5.651
    "out_chunks": 2,
    # `_fwd_out`'s warps with out_chunks 2 (128 rows; 255 registers, two programs an SM). 8 warps (214 registers, one
    # program an SM): `_fwd_out` 0.585 -> 0.823 ms at Olmo-Hybrid 8x4096 (session 15, call 1)
    "out2_warps": 4,
    "prep_warps": 4,
    "prep": "64",  # "64": _fwd_prep64 ([64, 64] tensor-core algebra); "16": _fwd_prep (16-row blocks)
    "prep64_bv": 64,
    "prep64_warps": 4,
    # the last two levels of _fwd_prep64's inverse on fp16 operands where keys are L2-normalised (`prep64_flags`)
    "inv_f16": True,
    # on the bf16 / fp16 path, T enters _fwd_prep64's w and u products as two half-precision operands, its
    # rounding and the remainder, so that w and u see T to about fp32 precision. On nearly parallel keys with beta
    # near 2 T's rounding was the largest error of the forward. H100 (session 14, call 12), bf16, T = 500: o 5.2e-2
    # -> 2.5e-2 (Olmo-Hybrid shape), 5.7e-2 -> 2.5e-2 (Qwen3-Next); random inputs unchanged (3.6e-3 / 3.9e-3);
    # fwd +0.011 ms at 8x4096, +0.015 to +0.022 at 1x32768
    "prep_split_t": True,
    # ... and in the backward: T stored with the remainder of its bf16 / fp16 rounding (128 B more a token and value
    # head, written by `_fwd_prep64` and read by `_bwd_wy`), which `_bwd_wy` takes as a second operand of T^T ddelta
    # and in dbeta. On nearly parallel keys with beta near 2 the stored T's rounding was the largest error of the
    # gradients (CPU emulation, session 14: dg 8.4e-2 from it alone, 1.5e-2 from every other rounding). H100 (session
    # 15, call 3), bf16, T = 500, largest error there without / with: Olmo-Hybrid shape 2.9e-1 / 5.6e-2 (dg), Qwen3-Next
    # 6.9e-2 / 3.1e-2, with the slower decay 7.0e-2 / 5.8e-2 and 6.6e-2 / 4.8e-2; random inputs unchanged. Off by
    # default for its cost at Olmo-Hybrid's three V blocks (calls 3-4): fwd+bwd 8x4096 5.721 -> 5.955 ms (`_bwd_wy`
    # 1.440 -> 1.595, the prep +0.05), 1x32768 5.986 -> 6.141; Qwen3-Next 5.522 -> 5.505 and 5.705 -> 5.616
    "bwd_split_t": False,
    # register cap for _fwd_prep64 on the bf16 / fp16 path (0: none): 168 lets three programs share an SM
    "prep64_maxnreg": 168,
    "prep64_warps_fp32": 8,  # exact fp32 [64, 64] products on FMA units: 4 warps spill ~11 KB a thread
    "state_warps": 4,
    "state_stages": 2,
    # ... and where the default V block leaves SMs idle (few long sequences): this many stages, with the V
    # block halved while the grid stays within one program per SM (a three-stage program takes 120-140 KB
    # of shared memory). Two stages prefetch a chunk's tiles only after the previous chunk's products, so
    # every step of the serial chain waits for its loads; three overlap them with a whole step. H100
    # (session 10), `_fwd_state` at 1x32768: Olmo-Hybrid 1.163 -> 0.927 ms (V block 32 on 2 stages -> 64
    # on 3: 180 -> 90 programs), Qwen3-Next 0.933 -> 0.695 (16 -> 32: 256 -> 128); 3 stages on the grids
    # that fill the GPU (8x4096): Olmo 0.692 -> 0.731, Qwen 0.523 -> 0.528
    "state_stages_few": 3,
    # ... and there, for one sequence (N == 1), the forward in this many parts of consecutive chunks (1: off), each
    # part's state pass on a second, high-priority stream as soon as the part's prep is done, and each part's
    # output as soon as its states are: the serial state pass leaves the GPU's bandwidth mostly idle, and this
    # lets the per-chunk prep and output kernels run beside it (`_fwd`). H100 (session 12), fwd / fwd+bwd
    # ms at 1x32768 for 1 / 2 / 4 / 8 parts: Qwen3-Next 1.794 / 1.687 / 1.722 / 1.950 and 5.823 / 5.691 / 5.732 /
    # 5.886; Olmo-Hybrid 2.158 / 1.885 / 1.956 / 2.024 and 6.614 / 6.348 / 6.414 / 6.528 (bit-identical results).
    # The state pass runs slower beside the other kernels (Qwen3-Next `_fwd_state` 0.685 -> 0.97-1.03 ms), so
    # more parts lose what they overlap
    "state_parts": 2,
    "state_parts_min": 16,  # chunks a part holds at least (fewer parts where the sequence is short)
    "state_parts_priority": -1,  # CUDA priority of the parts' state pass stream (lower: higher priority)
    # the backward of one sequence in parts too, walked from the last part to the first: each part's backward
    # state pass on the side stream, its `_bwd_dqk` / `_bwd_wy` on the current stream as soon as its state
    # gradients are written, so that they run on the SMs the serial pass leaves free (`_bwd`; the rule is the
    # forward's, `n_parts`, on the backward pass's programs, and the same state_parts_min / _priority)
    "bstate_parts": 2,
    # ... where the backward state pass has at most this many programs per SM: its programs (178-215 KB of shared
    # memory on 3 stages) leave the per-chunk kernels only the SMs they do not take. H100 (session 13), fwd+bwd ms
    # at 1x32768 for 1 / 2 / 3 / 4 / 6 parts: Olmo-Hybrid (90 programs) 6.328 / 5.966 / 5.951 / 5.980 / 6.062;
    # Qwen3-Next (128) 5.703 / 5.747 / 5.779 / 5.799 / 5.870, and with its state pass on V block 64 (64 programs)
    # 5.922 with 2 parts (that pass 0.917 -> 2.000 ms beside the other kernels)
    "bstate_parts_load": 0.75,
    "out_warps": 4,
    "out_stages": 2,
    "dl_warps": 4,
    "dl_stages": 3,  # H100 (session 6): 3 against 2, `_bwd_dlocal` 0.455 -> 0.444 ms (Olmo 8x4096), 0.395 -> 0.375 (Qwen)
    "bstate_bv": 64,
    "bstate_warps": 4,  # H100 sweep (session 3): 4 warps / 2 stages 0.36 ms against 0.55 at 8 / 1 (Olmo 2x4096)
    "bstate_stages": 2,
    # ... for `_bwd_state` where the key dim is a power of two (no padded key columns): 3 stages overlap the
    # next chunk's loads with this chunk's products, as in the forward. H100 (session 10), Qwen3-Next
    # `_bwd_state` 1.205 -> 0.919 ms at 1x32768, 0.817 -> 0.762 at 8x4096. With Olmo-Hybrid's 96 in a 128
    # block, 3 stages spill (56 B of stack offline) and were slower: 1.537 -> 1.893 (1x32768), and the
    # split-key pass 1.141 -> 2.250 (8x4096)
    "bstate_stages_pow2k": 3,
    # ... and for the one-block `_bwd_state` with a padded key block where its grid leaves SMs idle
    # (Olmo-Hybrid 1x32768: 90 programs): 3 stages on 8 warps (on 4 they spill, above). H100 (session 11),
    # Olmo-Hybrid 1x32768 `_bwd_state` 1.537 -> 1.394 ms, fwd+bwd 6.781 -> 6.652; the split-key pass that
    # runs where the grid exceeds the SMs was slower so (8x4096: 1.127 -> 1.933), as were 8 warps for the
    # power-of-two pass at 1x32768 (Qwen3-Next V block 32: 0.903 -> 1.051)
    "bstate_warps_few": 8,
    "bstate_stages_few": 3,
    "bstate_warps_fp32": 8,  # exact fp32 products on FMA units: 4 warps keep ~28 KB a thread on the stack
    # key blocks over 128 (K 129-256) on the bf16 / fp16 path: the backward state pass's q, k and w tiles alone take
    # 192 KB on 2 stages, so its V block drops to this and its warps go to bstate_warps_wide. Offline (sm_90, Triton
    # 3.6), K = 256, V = 128: V block 64 on 4 warps takes 249 KB of shared memory, over the H100's 227 KB (it could
    # not launch); 32 on 4 warps 221 KB with 216 B of stack, on 8 warps 225 KB with none
    "bstate_bv_wide": 32,
    "bstate_warps_wide": 8,
    "bstate_stages_fp32": 1,
    # key dims padded by a third or more (Olmo-Hybrid's 96 in a 128 block) take `_bwd_state_ks` where its
    # grid exceeds the SMs: the key columns in blocks of 64 and 32 (shared memory 137 -> 105 KB, sm_90).
    # H100 (session 7), Olmo-Hybrid `_bwd_state` 1.138 -> 1.084 ms at 8x4096, 0.370 -> 0.333 at 2x4096. The
    # same split of the forward state pass was slower (0.685 -> 0.749 ms at 8x4096; 227 registers, not 194)
    "bstate_ksplit": True,
    # ... where the pass has more than this many programs per SM (0: always)
    "bstate_ks_min": 1.0,
    # `_bwd_state_ks` with its 32-column state part transposed (TB): all of its loop loads staged (offline), not
    # two synchronous tile loads. H100 (session 8), Olmo-Hybrid 8x4096: `_bwd_state_ks` 1.087 -> 0.873 ms,
    # fwd+bwd 6.083 -> 5.866; 2x4096 0.334 -> 0.264
    "bstate_kt": True,
    # `_bwd_state_ks` also computing _bwd_dlocal's product (FUSE_DL) where it has at least bstate_fuse_min x SMs
    # programs. H100 (session 8, with TB), Olmo-Hybrid 8x4096 (720 programs): 0.873 + 0.383 ms -> 1.114,
    # fwd+bwd 5.866 -> 5.724; 2x4096 (180 programs): 0.264 + 0.100 -> 0.387, slower; fused without TB (232 B of
    # stack): 1.568. Fusing the one-block pass was slower: 0.822 + 0.313 -> 1.206-1.226 ms (Qwen3-Next
    # 8x4096), 1.554 + 0.406 -> 2.409 (Olmo-Hybrid 1x32768)
    "bstate_fuse_dl": True,
    "bstate_fuse_min": 3.0,
    # per-chunk kernels' grid order (_chunk_grid): a chunk's value heads next to each other, so that the
    # programs running at once read one contiguous [64 tokens, heads, dim] block. H100 (session 7), fwd+bwd
    # at 8x4096: Olmo-Hybrid 6.716 -> 6.309 ms (fwd 2.086 -> 1.948), Qwen3-Next 6.209 -> 5.606 (1.789 ->
    # 1.635); every per-chunk kernel 5-25% faster, `_bwd_dlocal` and `_fwd_out` most
    "heads_fast": True,
    "bchunk_bv": 64,
    "bchunk_warps": 8,  # _bwd_wy (4 warps: 1.1 KB a thread on the stack; 16: 0.8 KB)
    "dqk_warps": 8,
    # 4 stages against 3 (session 6): Olmo-Hybrid `_bwd_dqk` 1.480 -> 1.320 ms at 8x4096 (its three V blocks'
    # loads all in flight at once), Qwen3-Next (two V blocks) unchanged; `_bwd_wy` on 4 stages: +1-2%
    "dqk_stages": 4,
    # H100: 2 stages -2% (Olmo) / -4% (Qwen) fwd+bwd at 8x4096 against 1 (session 3); 3 stages, with 3 for
    # _bwd_dqk too, -5% / -3.5% against 2 (session 4: _bwd_wy 2.05 -> 1.84, _bwd_dqk 1.72 -> 1.55 ms at
    # Olmo 8x4096); session 4 saw no gain from 4 stages or 16 warps for _bwd_dqk (4 stages do help now: above)
    "bchunk_stages": 3,
    # ... for `_bwd_wy` where V spans at most two of its V blocks (Qwen3-Next's 128 in blocks of 64; bf16 / fp16).
    # H100 (session 18, call 6), 3 -> 4 stages: Qwen3-Next `_bwd_wy` 1.377-1.378 -> 1.345 ms at 8x4096 (fwd+bwd
    # 5.376 -> 5.335), 1.374-1.380 -> 1.346 at 1x32768 (5.564-5.603 -> 5.527); results bit-identical. With
    # Olmo-Hybrid's three V blocks 4 stages were slower (session 7: 1.640 -> 1.692)
    "bchunk_stages_2vb": 4,
    # dtype of the dk part _bwd_dqk hands to _bwd_wy: fp32, or (False) the inputs' dtype. H100 bf16 (session
    # 5): fwd+bwd Olmo 8x4096 7.37 -> 7.29 ms, Qwen3-Next 6.91 -> 6.72 (`_bwd_dqk` 1.40 -> 1.26, `_bwd_wy`
    # 1.87 -> 1.76), 1x32768 8.70 -> 8.51; dk error 3.7e-3 -> 4.0e-3 (Olmo), 4.0e-3 -> 4.4e-3 (Qwen)
    "dkp_fp32": False,
    # grouped value heads (HV > H): dq / dk added atomically (bf16) into zeroed [tokens, H, K] outputs by
    # _bwd_dqk / _bwd_wy (True), or stored per value head and summed by one elementwise add (False)
    "group_atomic": True,
    # `_bwd_wy` prefetches its dk part (which it loads after its V loop, a wait in the epilogue of a kernel at one program
    # an SM) into L2 when it starts (`_pf`). H100 (session 17, calls 4 and 6), `_bwd_wy` off -> on: Qwen3-Next 8x4096
    # 1.491-1.513 -> 1.360-1.378 ms, 1x32768 1.507-1.518 -> 1.364-1.395; Olmo-Hybrid 8x4096 1.425-1.450 -> 1.388-1.403;
    # fwd+bwd Qwen3-Next 8x4096 5.464-5.517 -> 5.337-5.380; results bit-identical. The same prefetch of the prep's v
    # (0.587 -> 0.610 ms Olmo-Hybrid), of the output's h and delta (0.587 -> 0.78), of the next wave's tiles, and bulk
    # prefetches (cp.async.bulk.prefetch) a row were all slower (benchmarks/NOTES_gdn.md, session 17)
    "pf_wy": True,
    # ... and its d(gc) part too: Qwen3-Next `_bwd_wy` 1.360 -> 1.335 ms, Olmo-Hybrid 1.388 -> 1.435 (call 6)
    "pf_wy_dgp": False,
    # `_bwd_wy` takes dk's two products with k through A (dA E beta on either side of k k^T) as one product of their
    # summed [64, 64] left sides. Two products compiled to a [64, K] fp32 layout conversion between them (the first
    # product's wgmma layout was not the second's); offline (sm_90, Olmo-Hybrid) SASS 2456 -> 2304 instructions, 69 ->
    # 55 barriers, 40 -> 32 wgmma. H100 (session 19, call 9, two rounds): `_bwd_wy` Olmo-Hybrid 8x4096 1.404 / 1.385 ->
    # 1.259 / 1.259 ms (fwd+bwd 5.678 / 5.615 -> 5.540 / 5.496), 1x32768 1.412 / 1.407 -> 1.278 (5.950 / 5.924 ->
    # 5.752 / 5.741); Qwen3-Next 8x4096 1.335 / 1.327 -> 1.221 (5.354 / 5.299 -> 5.250 / 5.197), 1x32768 1.343 /
    # 1.331 -> 1.221 / 1.219 (5.534 / 5.525 -> 5.363 / 5.362). dk moves by 2.5e-5 / 3.2e-5 (one rounding of the sum)
    "wy_sum_dk": True,
    # `_bwd_dqk` / `_bwd_wy` read 1/||q|| and 1/||k|| from the forward's buffers (the forward stores them for the state
    # pass) instead of reducing the q / k tiles again. Offline (sm_90, Olmo-Hybrid): dqk SASS 2368 -> 2192
    # instructions, 51 -> 41 barriers, 64 -> 52 shared stores (the row reductions and their [64] layout conversions
    # go); wy 2304 -> 2264, 55 -> 47. H100 (session 20, call 9, two rounds, 8x4096): `_bwd_dqk` Olmo-Hybrid 1.234 /
    # 1.231 -> 1.189 / 1.190 ms, Qwen3-Next 1.177 / 1.178 -> 1.157 / 1.158; `_bwd_wy` Qwen3-Next 1.220 / 1.221 ->
    # 1.206 / 1.206, Olmo-Hybrid unchanged; every output bit-identical (`--agree`, both shapes)
    "bchunk_norms": True,
    # the forward's output over pairs of chunks by the Gluon kernel (`out_gluon.py`) where it can run (`out_gluon.fits`:
    # a Hopper GPU, half precision, key dims 64, 80, 96 or 128, whole 64-column value blocks), else `_fwd_out`
    "out_gluon": True,
    # ... for launches of at least this many programs an SM: a launch of the Gluon kernel costs the host about 0.1 ms
    # more (Python builds its TMA descriptors), which shows where the GPU's work is short. H100 (session 24, call 7),
    # Olmo-Hybrid 2x4096 (1920 programs, 14.5 an SM): fwd 0.517 -> 0.639 ms wall at the same GPU busy time (0.494);
    # 8x4096 (58 an SM) 1.793 -> 1.733; 1x32768 in two parts (29 an SM each) 1.824 -> 1.744
    "out_gluon_min": 20.0,
    # the backward's `_bwd_dqk` by the Gluon kernel (`dqk_gluon.py`) where it can run (`dqk_gluon.fits`: a Hopper GPU,
    # half precision, key dims 64, 80, 96 or 128, whole 64-column value blocks, bchunk_norms). H100 (session 25, calls
    # 2-3), fwd+bwd ms off -> on: Qwen3-Next 8x4096 5.114 -> 4.972 and 5.117 -> 4.965, 1x32768 5.301 -> 5.228 and
    # 5.324 -> 5.200; Olmo-Hybrid 8x4096 5.442 -> 5.170 and 5.437 -> 5.155, 1x32768 5.687 -> 5.383 and 5.708 -> 5.358
    "dqk_gluon": True,
    # ... for launches of at least this many programs an SM: its ten TMA descriptors cost the host 70-110 us a launch
    # more than the Triton kernel (call 3, the kernel alone), and at 2x4096 (29-31 programs an SM) the wall time read
    # the host: Qwen3-Next fwd+bwd 1.358 -> 1.638 ms (call 2), Olmo-Hybrid 1.561 -> 1.879, with the kernel itself
    # 0.30 -> 0.27 ms. 8x4096 launches 116-124 programs an SM, 1x32768's two parts 58-62 each
    "dqk_gluon_min": 40.0,
    # the backward's `_bwd_wy` by the Gluon kernel (`wy_gluon.py`) where it can run (`wy_gluon.fits`: as dqk_gluon, and
    # T stored as one operand, bwd_split_t off), for launches of at least wy_gluon_min programs an SM (as dqk_gluon_min).
    # H100 (session 25, call 4), fwd+bwd ms off -> on (dqk_gluon on): Qwen3-Next 8x4096 5.025 -> 4.741, 1x32768
    # 5.257 -> 4.971; Olmo-Hybrid 8x4096 5.201 -> 4.891, 1x32768 5.430 -> 5.122
    "wy_gluon": True,
    "wy_gluon_min": 40.0,
    # the forward's `_fwd_prep64` by the Gluon PROTOTYPE (`prep_gluon.py`: written in session 25 after the device time
    # was spent, never run on a GPU, so off) where `prep_gluon.fits` allows: as dqk_gluon, L2-normalised keys, T as one
    # operand
    "prep_gluon": False,
}
env_config("HPT_GDN_CONFIG", CONFIG)


def _empty(*shape, dtype, device):
    x = torch.empty(*shape, dtype=dtype, device=device)
    if POISON and dtype.is_floating_point:
        x.fill_(float("nan"))
    return x


# ----------------------------------------------------------------------------------------- helpers
@triton.jit
def _ld16(ptr, tok0, r: tl.constexpr, eos, stride_t, cols, ncol):
    """Rows tok0+16r .. +16 of a [tokens, ncol] view (token stride stride_t), fp32, masked."""
    rr = tok0 + r * 16 + tl.arange(0, 16)
    m = (rr < eos)[:, None] & (cols < ncol)[None, :]
    return tl.load(ptr + rr[:, None] * stride_t + cols[None, :], mask=m, other=0.0).to(tl.float32)


@triton.jit
def _ld16v(ptr, tok0, r: tl.constexpr, eos, stride_t):
    rr = tok0 + r * 16 + tl.arange(0, 16)
    return tl.load(ptr + rr * stride_t, mask=rr < eos, other=0.0).to(tl.float32)


@triton.jit
def _st16(ptr, x, tok0, r: tl.constexpr, eos, stride_t, cols, ncol):
    rr = tok0 + r * 16 + tl.arange(0, 16)
    m = (rr < eos)[:, None] & (cols < ncol)[None, :]
    tl.store(ptr + rr[:, None] * stride_t + cols[None, :], x.to(ptr.dtype.element_ty), mask=m)


@triton.jit
def _chunk_rows(cinfo, i_c, K: tl.constexpr, BK: tl.constexpr):
    """Chunk i_c of the per-chunk table: its first and end token (int64), the key columns, the row index,
    the token of each row, which rows hold a token, and the [rows, K] mask."""
    bos = tl.load(cinfo + 2 * i_c).to(tl.int64)
    eos = tl.load(cinfo + 2 * i_c + 1).to(tl.int64)
    ck = tl.arange(0, BK)
    rt = tl.arange(0, _BT)
    tt = bos + rt
    m_t = tt < eos
    return bos, eos, ck, rt, tt, m_t, m_t[:, None] & (ck < K)[None, :]


@triton.jit
def _chunk_head(HV: tl.constexpr):
    """A per-chunk program's chunk and value head. The grid is (chunks, value heads), or (value heads, chunks)
    when the driver launches the heads of a chunk next to each other (`_chunk_grid`); when both counts are
    equal either reading covers every pair once."""
    if tl.num_programs(1) == HV:
        return tl.program_id(0), tl.program_id(1)
    else:
        return tl.program_id(1), tl.program_id(0)


@triton.jit
def _chunk_prog(cinfo, H: tl.constexpr, HV: tl.constexpr, K: tl.constexpr, BK: tl.constexpr):
    """A per-chunk program's chunk and value head (_chunk_head), its q/k head and _chunk_rows."""
    i_c, i_hv = _chunk_head(HV)
    i_h = i_hv // (HV // H)
    bos, eos, ck, rt, tt, m_t, m_tk = _chunk_rows(cinfo, i_c, K, BK)
    return i_c, i_hv, i_h, bos, eos, ck, rt, tt, m_t, m_tk


@triton.jit
def _pf(ptrs, mask):
    """Prefetch into L2 the 128-byte lines at ptrs where mask (PTX prefetch.global.L2: nothing waits on it, no
    register holds a result). NVIDIA GPUs only: `wy_prefetch_flags`."""
    tl.inline_asm_elementwise(
        asm="{ .reg .pred p; setp.ne.b32 p, $2, 0; @p prefetch.global.L2 [$1]; mov.u32 $0, 0; }",
        constraints="=r,l,r", args=[ptrs, mask.to(tl.int32)], dtype=tl.int32, is_pure=False, pack=1)


@triton.jit
def _pf_rows(ptr, row_off, m_r, NCOL: tl.constexpr):
    """`_pf` of rows of NCOL elements at ptr + row_off ([R], masked by m_r): one address every 128 bytes (a line) and
    the row's last, so that every line a row touches is fetched; rows of up to 7 lines (448 half-precision
    elements). (One bulk prefetch a row, cp.async.bulk.prefetch.L2, was slower on the H100: session 17, call 5.)"""
    epl = 1024 // ptr.dtype.element_ty.primitive_bitwidth  # elements a 128-byte line
    c = tl.arange(0, 8) * epl
    _pf(ptr + row_off[:, None] + tl.minimum(c, NCOL - 1)[None, :], m_r[:, None] & (c < NCOL + epl)[None, :])


@triton.jit
def _seq_prog(cu, H: tl.constexpr, HV: tl.constexpr):
    """A per-sequence program's V block (grid axis 0), sequence x value head (axis 1), value head, q/k head,
    first and end token (int64), and sequence."""
    i_v = tl.program_id(0)
    i_nh = tl.program_id(1)
    i_n = i_nh // HV
    i_hv = i_nh % HV
    i_h = i_hv // (HV // H)
    bos = tl.load(cu + i_n).to(tl.int64)
    eos = tl.load(cu + i_n + 1).to(tl.int64)
    return i_v, i_nh, i_hv, i_h, bos, eos, i_n


@triton.jit
def _ld_rows(ptr, tt, i_h, ck, m_tk, H: tl.constexpr, K: tl.constexpr):
    """The [rows, BK] tile of head i_h of a [tokens, H, K] tensor (q or k), zero outside m_tk."""
    return tl.load(ptr + (tt * H + i_h)[:, None] * K + ck[None, :], mask=m_tk, other=0.0)


@triton.jit
def _ld_hm(ptr, i_hv, TT, tt, m_t):
    """Value head i_hv's per-token values at tokens tt of a head-major [HV, TT] fp32 buffer (the row norms rk / rq),
    zero outside m_t."""
    return tl.load(ptr + i_hv.to(tl.int64) * TT + tt, mask=m_t, other=0.0)


@triton.jit
def _valid2(m_t):
    """[i, j]: both rows hold tokens of this chunk. Decay exponents exp(gc_i - gc_j) are built only there:
    a padding row of a chunk cut short by a document end reads gc = 0, and exp(0 - gc_j) overflows to inf
    for a hard-decaying layer (gc_j < -88), which turns the zero padding into 0 * inf = NaN in the valid
    rows' gradients."""
    return m_t[:, None] & m_t[None, :]


@triton.jit
def _l2n(x, rk_ptr, tok0, r: tl.constexpr, eos, L2: tl.constexpr):
    """Rows of x scaled to unit length when L2; their 1/||x|| (ones without L2) stored at rk_ptr + token."""
    rr = tok0 + r * 16 + tl.arange(0, 16)
    rn = _rnorm(x, L2)
    if L2:
        x = x * rn[:, None]
    tl.store(rk_ptr + rr, rn, mask=rr < eos)
    return x, rn


@triton.jit
def _inv16(A):
    """(I + A)^-1 for a strictly lower-triangular 16x16 A, by block doubling.

    With T_s the inverse of I + (A within the diagonal s x s blocks), T_2s = T_s - T_s L_s T_s, where L_s
    holds A's entries in the lower-left s x s block of every diagonal 2s x 2s block (T_2 = I - L_1). Each
    level is block forward substitution, exact in exact arithmetic and as stable as row-by-row
    substitution: six small fp32 products ("ieee"). The power series (I - A)(I + A^2)(I + A^4)(I + A^8)
    used before has the same cost but cancels large terms: with nearly parallel keys and beta near 2 the
    entries of A^8 reach 1e5 while (I + A)^-1 stays near 1, and it lost 1e-1 in fp32 (all of it in TF32).
    """
    r = tl.arange(0, 16)
    ri = r[:, None]
    rj = r[None, :]
    T = tl.where(ri == rj, 1.0, 0.0) - tl.where(ri // 2 == rj // 2, A, 0.0)
    L = tl.where((ri // 4 == rj // 4) & (ri // 2 != rj // 2), A, 0.0)
    T = T - _d(_d(T, L), T)
    L = tl.where((ri // 8 == rj // 8) & (ri // 4 != rj // 4), A, 0.0)
    T = T - _d(_d(T, L), T)
    L = tl.where(ri // 8 != rj // 8, A, 0.0)
    return T - _d(_d(T, L), T)


@triton.jit
def _d(a, b):
    return tl.dot(a, b, input_precision="ieee")


@triton.jit
def _mm(a, b):
    """a @ b. fp32 operands (the fp32 path) get exact fp32 products: Triton's default for an fp32 dot is
    TF32 (10-bit mantissa), which put fp32 prefill 2.8e-2 off the token-by-token decode in log-probs.
    bf16/fp16 operands take the tensor cores as before (input_precision does not apply to them)."""
    if a.dtype == tl.float32:
        return tl.dot(a, b, input_precision=_FP32_DOT)
    else:
        return tl.dot(a, b)


@triton.jit
def _dt(a, b, DT: tl.constexpr):
    return _mm(a.to(DT), b.to(DT))


# ----------------------------------------------------------------------------------------- forward
@triton.jit
def _st_ai(ap, D0, T10, D1, T20, T21, D2, T30, T31, T32, D3, bos, eos, st, r16):
    """_fwd_prep's T = (I + A)^-1 as [64, 64] rows (zeros above the diagonal blocks) at ap, row stride st."""
    z = tl.zeros([16, 16], dtype=tl.float32)
    _st16(ap + 0, D0, bos, 0, eos, st, r16, 16)
    _st16(ap + 16, z, bos, 0, eos, st, r16, 16)
    _st16(ap + 32, z, bos, 0, eos, st, r16, 16)
    _st16(ap + 48, z, bos, 0, eos, st, r16, 16)
    _st16(ap + 0, T10, bos, 1, eos, st, r16, 16)
    _st16(ap + 16, D1, bos, 1, eos, st, r16, 16)
    _st16(ap + 32, z, bos, 1, eos, st, r16, 16)
    _st16(ap + 48, z, bos, 1, eos, st, r16, 16)
    _st16(ap + 0, T20, bos, 2, eos, st, r16, 16)
    _st16(ap + 16, T21, bos, 2, eos, st, r16, 16)
    _st16(ap + 32, D2, bos, 2, eos, st, r16, 16)
    _st16(ap + 48, z, bos, 2, eos, st, r16, 16)
    _st16(ap + 0, T30, bos, 3, eos, st, r16, 16)
    _st16(ap + 16, T31, bos, 3, eos, st, r16, 16)
    _st16(ap + 32, T32, bos, 3, eos, st, r16, 16)
    _st16(ap + 48, D3, bos, 3, eos, st, r16, 16)


@triton.jit
def _fwd_prep(
    k, v, g, beta, gc_out, rk_out, Ai_out, w_out, u_out, cinfo, TT,
    H: tl.constexpr, HV: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
    BK: tl.constexpr, BV: tl.constexpr, L2: tl.constexpr, DT: tl.constexpr, STORE_AI: tl.constexpr,
):
    i_c, i_hv, i_h, bos, eos, ck, rt, tt, m_t, m_tk = _chunk_prog(cinfo, H, HV, K, BK)
    r16 = tl.arange(0, 16)
    kp = k + i_h * K
    rkp = rk_out + i_hv.to(tl.int64) * TT  # 1/||k|| head-major [HV, TT] for _fwd_state (one 256 B row a chunk)
    k0, r0 = _l2n(_ld16(kp, bos, 0, eos, H * K, ck, K), rkp, bos, 0, eos, L2)
    k1, r1 = _l2n(_ld16(kp, bos, 1, eos, H * K, ck, K), rkp, bos, 1, eos, L2)
    k2, r2 = _l2n(_ld16(kp, bos, 2, eos, H * K, ck, K), rkp, bos, 2, eos, L2)
    k3, r3 = _l2n(_ld16(kp, bos, 3, eos, H * K, ck, K), rkp, bos, 3, eos, L2)
    g0 = _ld16v(g + i_hv, bos, 0, eos, HV)
    g1 = _ld16v(g + i_hv, bos, 1, eos, HV)
    g2 = _ld16v(g + i_hv, bos, 2, eos, HV)
    g3 = _ld16v(g + i_hv, bos, 3, eos, HV)
    c0 = tl.cumsum(g0, 0)
    s0 = tl.sum(g0, 0)
    c1 = tl.cumsum(g1, 0) + s0
    s1 = s0 + tl.sum(g1, 0)
    c2 = tl.cumsum(g2, 0) + s1
    s2 = s1 + tl.sum(g2, 0)
    c3 = tl.cumsum(g3, 0) + s2
    tl.store(gc_out + (bos + r16) * HV + i_hv, c0, mask=bos + r16 < eos)
    tl.store(gc_out + (bos + 16 + r16) * HV + i_hv, c1, mask=bos + 16 + r16 < eos)
    tl.store(gc_out + (bos + 32 + r16) * HV + i_hv, c2, mask=bos + 32 + r16 < eos)
    tl.store(gc_out + (bos + 48 + r16) * HV + i_hv, c3, mask=bos + 48 + r16 < eos)
    b0 = _ld16v(beta + i_hv, bos, 0, eos, HV)
    b1 = _ld16v(beta + i_hv, bos, 1, eos, HV)
    b2 = _ld16v(beta + i_hv, bos, 2, eos, HV)
    b3 = _ld16v(beta + i_hv, bos, 3, eos, HV)
    # diagonal blocks of A (strictly lower) and their inverses
    low = r16[:, None] > r16[None, :]
    A00 = tl.where(low, _dt(k0 * b0[:, None], tl.trans(k0), DT) * tl.exp(tl.where(low, c0[:, None] - c0[None, :], float("-inf"))), 0.0)
    A11 = tl.where(low, _dt(k1 * b1[:, None], tl.trans(k1), DT) * tl.exp(tl.where(low, c1[:, None] - c1[None, :], float("-inf"))), 0.0)
    A22 = tl.where(low, _dt(k2 * b2[:, None], tl.trans(k2), DT) * tl.exp(tl.where(low, c2[:, None] - c2[None, :], float("-inf"))), 0.0)
    A33 = tl.where(low, _dt(k3 * b3[:, None], tl.trans(k3), DT) * tl.exp(tl.where(low, c3[:, None] - c3[None, :], float("-inf"))), 0.0)
    A10 = _dt(k1 * b1[:, None], tl.trans(k0), DT) * tl.exp(c1[:, None] - c0[None, :])
    A20 = _dt(k2 * b2[:, None], tl.trans(k0), DT) * tl.exp(c2[:, None] - c0[None, :])
    A21 = _dt(k2 * b2[:, None], tl.trans(k1), DT) * tl.exp(c2[:, None] - c1[None, :])
    A30 = _dt(k3 * b3[:, None], tl.trans(k0), DT) * tl.exp(c3[:, None] - c0[None, :])
    A31 = _dt(k3 * b3[:, None], tl.trans(k1), DT) * tl.exp(c3[:, None] - c1[None, :])
    A32 = _dt(k3 * b3[:, None], tl.trans(k2), DT) * tl.exp(c3[:, None] - c2[None, :])
    D0 = _inv16(A00)
    D1 = _inv16(A11)
    D2 = _inv16(A22)
    D3 = _inv16(A33)
    T10 = -_d(_d(D1, A10), D0)
    T21 = -_d(_d(D2, A21), D1)
    T32 = -_d(_d(D3, A32), D2)
    T20 = -_d(D2, _d(A20, D0) + _d(A21, T10))
    T31 = -_d(D3, _d(A31, D1) + _d(A32, T21))
    T30 = -_d(D3, _d(A30, D0) + _d(A31, T10) + _d(A32, T20))
    if STORE_AI:  # T for the backward only
        _st_ai(Ai_out + i_hv * 64, D0, T10, D1, T20, T21, D2, T30, T31, T32, D3, bos, eos, HV * 64, r16)
    # w = T (beta exp(gc) k): k loaded again (an L1/L2 hit) rather than four fp32 tiles kept live through
    # the inverse (they spilled)
    kb0 = (_ld16(kp, bos, 0, eos, H * K, ck, K) * (r0 * b0 * tl.exp(c0))[:, None]).to(DT)
    kb1 = (_ld16(kp, bos, 1, eos, H * K, ck, K) * (r1 * b1 * tl.exp(c1))[:, None]).to(DT)
    kb2 = (_ld16(kp, bos, 2, eos, H * K, ck, K) * (r2 * b2 * tl.exp(c2))[:, None]).to(DT)
    kb3 = (_ld16(kp, bos, 3, eos, H * K, ck, K) * (r3 * b3 * tl.exp(c3))[:, None]).to(DT)
    D0c, D1c, D2c, D3c = D0.to(DT), D1.to(DT), D2.to(DT), D3.to(DT)
    T10c, T20c, T21c = T10.to(DT), T20.to(DT), T21.to(DT)
    T30c, T31c, T32c = T30.to(DT), T31.to(DT), T32.to(DT)
    wp = w_out + i_hv * K
    _st16(wp, _mm(D0c, kb0), bos, 0, eos, HV * K, ck, K)
    _st16(wp, _mm(T10c, kb0) + _mm(D1c, kb1), bos, 1, eos, HV * K, ck, K)
    _st16(wp, _mm(T20c, kb0) + _mm(T21c, kb1) + _mm(D2c, kb2), bos, 2, eos, HV * K, ck, K)
    _st16(wp, _mm(T30c, kb0) + _mm(T31c, kb1) + _mm(T32c, kb2) + _mm(D3c, kb3), bos, 3, eos, HV * K, ck, K)
    # u = T (beta v)
    for i_v in range(tl.cdiv(V, BV)):
        cv = i_v * BV + tl.arange(0, BV)
        vp = v + i_hv * V
        vb0 = (_ld16(vp, bos, 0, eos, HV * V, cv, V) * b0[:, None]).to(DT)
        vb1 = (_ld16(vp, bos, 1, eos, HV * V, cv, V) * b1[:, None]).to(DT)
        vb2 = (_ld16(vp, bos, 2, eos, HV * V, cv, V) * b2[:, None]).to(DT)
        vb3 = (_ld16(vp, bos, 3, eos, HV * V, cv, V) * b3[:, None]).to(DT)
        up = u_out + i_hv * V
        _st16(up, _mm(D0c, vb0), bos, 0, eos, HV * V, cv, V)
        _st16(up, _mm(T10c, vb0) + _mm(D1c, vb1), bos, 1, eos, HV * V, cv, V)
        _st16(up, _mm(T20c, vb0) + _mm(T21c, vb1) + _mm(D2c, vb2), bos, 2, eos, HV * V, cv, V)
        _st16(up, _mm(T30c, vb0) + _mm(T31c, vb1) + _mm(T32c, vb2) + _mm(D3c, vb3), bos, 3, eos, HV * V, cv, V)


@triton.jit
def _d64(a, b, DT: tl.constexpr):
    """fp32 product inside _fwd_prep64's inverse: exact ("ieee") on the fp32 path, TF32 tensor cores on the
    bf16/fp16 path. TF32 is enough there because the block doubling is stable: the residual
    |(I + A) T - I| of the TF32 result stays below that of T rounded to bf16 (which every use of T sees),
    also for nearly parallel keys with beta near 2 (benchmarks/NOTES_gdn.md, session 3)."""
    if DT == tl.float32:
        return _d(a, b)
    else:
        return tl.dot(a, b, input_precision="tf32")


@triton.jit
def _merge64(T, A, ri, rj, s: tl.constexpr, DT: tl.constexpr, F16: tl.constexpr):
    """One block-doubling level: T_2s = T_s - T_s L_s T_s (see _inv16), on the whole [64, 64] tile. F16
    (`prep64_flags`): both products on fp16 operands, which carry TF32's 10-bit mantissa in half the bits (fp32
    accumulation), so each wgmma takes twice the depth and half the shared memory."""
    L = tl.where((ri // (2 * s) == rj // (2 * s)) & (ri // s != rj // s), A, 0.0)
    if F16:
        TL = tl.dot(T.to(tl.float16), L.to(tl.float16))
        return T - tl.dot(TL.to(tl.float16), T.to(tl.float16))
    return T - _d64(_d64(T, L, DT), T, DT)


@triton.jit
def _merge16x4(T, A, i, j, s: tl.constexpr, DT: tl.constexpr):
    """_merge64 on the four diagonal 16x16 blocks at once ([4, 16, 16], batched products)."""
    L = tl.where((i // (2 * s) == j // (2 * s)) & (i // s != j // s), A, 0.0)
    return T - _d64(_d64(T, L, DT), T, DT)


@triton.jit
def _tdiag16(b_k, fr, rk, gc, BK: tl.constexpr, DT: tl.constexpr):
    """The first three block-doubling levels of _fwd_prep64 (T of the four diagonal 16x16 blocks), as batched
    [4, 16, 16] products instead of [64, 64] ones: those levels only touch the diagonal blocks, and the full
    tiles spent 6 of the inverse's 10 [64, 64] TF32 products on zeros. Returned as the block-diagonal [64, 64]
    T_16 (zeros off the blocks), which levels 16 and 32 continue on the full tile. H100 (session 6): prep
    0.897 -> 0.842 ms (Olmo-Hybrid 8x4096), 0.872 -> 0.848 (Qwen3-Next)."""
    k3 = tl.reshape(b_k.to(DT), (4, 16, BK))
    A = _mm(k3, tl.permute(k3, (0, 2, 1)))
    i = tl.arange(0, 16)[None, :, None]
    j = tl.arange(0, 16)[None, None, :]
    low = i > j
    g3 = tl.reshape(gc, (4, 16))
    A = A * tl.reshape(fr, (4, 16))[:, :, None] * tl.reshape(rk, (4, 16))[:, None, :]
    A = tl.where(low, A * tl.exp(tl.where(low, g3[:, :, None] - g3[:, None, :], float("-inf"))), 0.0)
    T = tl.where(i == j, 1.0, 0.0) - tl.where(i // 2 == j // 2, A, 0.0)
    T = _merge16x4(T, A, i, j, 2, DT)
    T = _merge16x4(T, A, i, j, 4, DT)
    T = _merge16x4(T, A, i, j, 8, DT)
    E = (tl.arange(0, 4)[:, None] == tl.arange(0, 4)[None, :]).to(tl.float32)
    return tl.reshape(T[:, :, None, :] * E[:, None, :, None], (64, 64))


@triton.jit
def _hi_lo(x, DT: tl.constexpr, SPLIT: tl.constexpr):
    """x (fp32) as a DT operand, and with SPLIT the remainder x - that, also in DT (else the first again, unused),
    so that two products see x to about fp32 precision (`_mm_hi_lo`)."""
    hi = x.to(DT)
    if SPLIT:
        lo = (x - hi.to(tl.float32)).to(DT)
    else:
        lo = hi
    return hi, lo


@triton.jit
def _mm_hi_lo(hi, lo, b, SPLIT: tl.constexpr):
    """(hi + lo) @ b as two products with SPLIT (`_hi_lo`), else hi @ b."""
    r = _mm(hi, b)
    if SPLIT:
        r += _mm(lo, b)
    return r


@triton.jit
def _fwd_prep64(
    k, v, g, beta, gc_out, rk_out, Ai_out, w_out, u_out, cinfo, TT,
    H: tl.constexpr, HV: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
    BK: tl.constexpr, BV: tl.constexpr, L2: tl.constexpr, DT: tl.constexpr, STORE_AI: tl.constexpr,
    F16: tl.constexpr, SPLIT: tl.constexpr, TW: tl.constexpr = 1,
):
    """_fwd_prep as [64, 64] algebra on the tensor cores: A from one dot, T = (I + A)^-1 by five block-
    doubling levels (ten [64, 64] products, _d64; the last two levels' on fp16 operands with F16), w and u
    one dot each (two with SPLIT: T's half-precision rounding, then its remainder, `_hi_lo`). See `prep64_flags`.
    T for the backward: rows of TW x 64 at Ai_out, T in the first 64 columns, with TW = 2 the remainder of its
    rounding in the next 64 (`_bwd_wy`)."""
    i_c, i_hv, i_h, bos, eos, ck, rt, tt, m_t, m_tk = _chunk_prog(cinfo, H, HV, K, BK)
    # raw (bf16) k feeds every product and the per-token factors scale the [64, 64] side: no fp32 [64, K]
    # tile of k is kept, and the products see k without a rounding of k * factor
    b_k = _ld_rows(k, tt, i_h, ck, m_tk, H, K)
    rk = _rnorm(b_k, L2)  # head-major [HV, TT]: _fwd_state feeds raw k to its dot and scales by this
    tl.store(rk_out + i_hv.to(tl.int64) * TT + tt, rk, mask=m_t)
    b_gc = tl.cumsum(tl.load(g + tt * HV + i_hv, mask=m_t, other=0.0).to(tl.float32), 0)
    tl.store(gc_out + tt * HV + i_hv, b_gc, mask=m_t)
    b_b = tl.load(beta + tt * HV + i_hv, mask=m_t, other=0.0).to(tl.float32)
    ri = rt[:, None]
    rj = rt[None, :]
    low = ri > rj
    # padding rows of a cut-short chunk continue the cumsum with g = 0 (no overflow) and have k = 0
    A = _mm(b_k.to(DT), tl.trans(b_k.to(DT))) * (b_b * rk)[:, None] * rk[None, :]
    A = tl.where(low, A * tl.exp(tl.where(low, b_gc[:, None] - b_gc[None, :], float("-inf"))), 0.0)
    b_T = _tdiag16(b_k, b_b * rk, rk, b_gc, BK, DT)
    b_T = _merge64(b_T, A, ri, rj, 16, DT, F16)
    b_T = _merge64(b_T, A, ri, rj, 32, DT, F16)
    if STORE_AI:  # T for the backward only
        ai = Ai_out + (tt * HV + i_hv)[:, None] * (TW * _BT) + rt[None, :]
        t_hi = b_T.to(Ai_out.dtype.element_ty)
        tl.store(ai, t_hi, mask=m_t[:, None])
        if TW == 2:
            tl.store(ai + _BT, (b_T - t_hi.to(tl.float32)).to(Ai_out.dtype.element_ty), mask=m_t[:, None])
    # w = T diag(beta exp(gc) / ||k||) k, u = T diag(beta) v
    # w in 64-column blocks of k (loaded again, from cache): a [64, 64] accumulator instead of [64, BK], 227 ->
    # 185 registers (sm_90, Olmo-Hybrid), which with the prep64_maxnreg cap of 168 lets three programs share
    # an SM. H100 (session 6): prep 0.835 -> 0.739 ms (Olmo-Hybrid 8x4096), 0.836 -> 0.702 (Qwen3-Next);
    # the 64-column blocks alone, without the cap, 0.859 / 0.844; a cap of 128 (four programs, 300-380 B of stack) 0.985
    b_Tw, b_Twl = _hi_lo(b_T * (rk * b_b * tl.exp(b_gc))[None, :], DT, SPLIT)
    for i_k in range(BK // 64):
        ck2 = i_k * 64 + tl.arange(0, 64)
        m_tk2 = m_t[:, None] & (ck2 < K)[None, :]
        b_k2 = _ld_rows(k, tt, i_h, ck2, m_tk2, H, K)
        b_w = _mm_hi_lo(b_Tw, b_Twl, b_k2.to(DT), SPLIT)
        tl.store(w_out + (tt * HV + i_hv)[:, None] * K + ck2[None, :], b_w.to(w_out.dtype.element_ty), mask=m_tk2)
    b_Tb, b_Tbl = _hi_lo(b_T * b_b[None, :], DT, SPLIT)
    for i_v in range(tl.cdiv(V, BV)):
        cv = i_v * BV + tl.arange(0, BV)
        m_tv = m_t[:, None] & (cv < V)[None, :]
        off = (tt * HV + i_hv)[:, None] * V + cv[None, :]
        b_v = tl.load(v + off, mask=m_tv, other=0.0)
        b_u = _mm_hi_lo(b_Tb, b_Tbl, b_v.to(DT), SPLIT)
        tl.store(u_out + off, b_u.to(u_out.dtype.element_ty), mask=m_tv)


@triton.jit
def _rnorm(x, L2: tl.constexpr):
    """Per-row 1/||x|| (fp32) when L2, else ones."""
    if L2:
        xf = x.to(tl.float32)
        r = tl.rsqrt(tl.sum(xf * xf, 1) + 1e-6)
    else:
        r = tl.sum(x.to(tl.float32), 1) * 0.0 + 1.0
    return r


@triton.jit
def _fwd_state(
    k, w, u, gc, rk, h0, hbuf, vnew, ht, cu, coff, TT,
    H: tl.constexpr, HV: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
    BK: tl.constexpr, BV: tl.constexpr, L2: tl.constexpr, DT: tl.constexpr,
    HAS_H0: tl.constexpr, STORE_HT: tl.constexpr, HS: tl.constexpr = 1,
):
    """The forward's serial pass over one sequence's chunks: delta = u - w h (to vnew) and the state h entering
    every chunk (HS = 1) or every HS-th chunk (at hbuf index coff + chunk // HS: the output's groups, `_fwd_out`,
    where no backward reads the rest)."""
    i_v, i_nh, i_hv, i_h, bos, eos, i_n = _seq_prog(cu, H, HV)
    c_off = tl.load(coff + i_n).to(tl.int64)
    ck = tl.arange(0, BK)
    cv = i_v * BV + tl.arange(0, BV)
    rt = tl.arange(0, _BT)
    m_kv = (ck < K)[:, None] & (cv < V)[None, :]
    s_off = ck[:, None] * V + cv[None, :]
    if HAS_H0:
        h = tl.load(h0 + i_nh.to(tl.int64) * K * V + s_off, mask=m_kv, other=0.0).to(tl.float32)
    else:
        h = tl.zeros([BK, BV], dtype=tl.float32)
    NT = tl.cdiv(eos - bos, _BT)
    for i_t in range(NT):
        t0 = bos + i_t * _BT
        tt = t0 + rt
        m_t = tt < eos
        tl.store(hbuf + ((c_off + i_t // HS) * HV + i_hv) * K * V + s_off, h.to(hbuf.dtype.element_ty),
                 mask=m_kv & (i_t % HS == 0))
        m_tk = m_t[:, None] & (ck < K)[None, :]
        m_tv = m_t[:, None] & (cv < V)[None, :]
        b_w = tl.load(w + (tt * HV + i_hv)[:, None] * K + ck[None, :], mask=m_tk, other=0.0)
        b_u = tl.load(u + (tt * HV + i_hv)[:, None] * V + cv[None, :], mask=m_tv, other=0.0).to(tl.float32)
        b_k = _ld_rows(k, tt, i_h, ck, m_tk, H, K)
        b_g = tl.load(gc + tt * HV + i_hv, mask=m_t, other=0.0)
        b_rk = _ld_hm(rk, i_hv, TT, tt, m_t)
        last = tl.minimum(t0 + _BT, eos) - 1
        gL = tl.load(gc + last * HV + i_hv)
        dlt = b_u - _mm(b_w.to(DT), h.to(DT))
        dlt_c = dlt.to(vnew.dtype.element_ty)
        tl.store(vnew + (tt * HV + i_hv)[:, None] * V + cv[None, :], dlt_c, mask=m_tv)
        # (k diag(f))^T delta = k^T (f delta): the per-token factor goes on the small [BT, BV] side and
        # raw k feeds the dot (no fp32 copy of the [BT, K] tile, no norm recomputed in the serial loop)
        fk = tl.where(m_t, tl.exp(gL - b_g) * b_rk, 0.0)
        dsc = (dlt_c.to(tl.float32) * fk[:, None]).to(DT)
        h = h * tl.exp(gL) + _mm(tl.trans(b_k.to(DT)), dsc)
    if STORE_HT:
        tl.store(ht + i_nh.to(tl.int64) * K * V + s_off, h, mask=m_kv)


@triton.jit
def _fwd_out(
    q, k, gc, rk, rq_out, hbuf, vnew, o, ginfo, scale, TT,
    H: tl.constexpr, HV: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
    BK: tl.constexpr, BV: tl.constexpr, L2: tl.constexpr, DT: tl.constexpr, S: tl.constexpr, HS: tl.constexpr,
):
    """o = scale (q exp(gc)) h + scale (q k^T * exp(gc_i - gc_j), i >= j) delta over a group of S consecutive
    chunks of one sequence (64 S rows; `_groups`), V blocks in turn; and the rows' 1/||q|| (ones without L2) to
    rq_out [HV, tokens] for the backward state pass (1/||k||, rk, is the forward prep's).

    h is the state entering the group's first chunk: hbuf at the group's chunk index (HS = 1: the state pass
    stored every chunk's) or at its group index (HS = S: the state pass stored only the groups' first chunks).
    The later chunks' state is not read but built into the products: with gc continued across the group (each
    earlier chunk's last cumulative g added), exp(gc_i) q_i h covers the decay of h through the earlier chunks and
    the group-wide lower-triangular q k^T covers what their deltas added to the state, which is the chunked form
    on 64 S tokens. S = 2 reads half the states of S = 1 (and, with HS = 2, the state pass writes half)."""
    i_g, i_hv = _chunk_head(HV)
    i_h = i_hv // (HV // H)
    bos = tl.load(ginfo + 4 * i_g).to(tl.int64)
    eos = tl.load(ginfo + 4 * i_g + 1).to(tl.int64)
    hidx = tl.load(ginfo + 4 * i_g + (2 if HS == 1 else 3)).to(tl.int64)
    ck = tl.arange(0, BK)
    rt = tl.arange(0, S * _BT)
    tt = bos + rt
    m_t = tt < eos
    m_tk = m_t[:, None] & (ck < K)[None, :]
    hb = (hidx * HV + i_hv) * K * V
    b_q = _ld_rows(q, tt, i_h, ck, m_tk, H, K)
    b_k = _ld_rows(k, tt, i_h, ck, m_tk, H, K)
    rq = _rnorm(b_q, L2)
    tl.store(rq_out + i_hv.to(tl.int64) * TT + tt, rq, mask=m_t)
    rk = _ld_hm(rk, i_hv, TT, tt, m_t)
    b_g = tl.load(gc + tt * HV + i_hv, mask=m_t, other=0.0)
    for j in tl.static_range(1, S):  # chunk j's rows and on: + chunk j - 1's last (chunk-local) cumulative g
        t_j = bos + j * _BT
        b_g += tl.where(rt >= j * _BT, tl.load(gc + (t_j - 1) * HV + i_hv, mask=t_j < eos, other=0.0), 0.0)
    m_c = (rt[:, None] >= rt[None, :]) & _valid2(m_t)
    Aqk = _mm(b_q.to(DT), tl.trans(b_k.to(DT))) * tl.exp(tl.where(m_c, b_g[:, None] - b_g[None, :], float("-inf")))
    Aqk = (Aqk * (rq * scale)[:, None] * rk[None, :]).to(DT)
    fq = rq * tl.exp(b_g) * scale
    for i_v in range(tl.cdiv(V, BV)):
        cv = i_v * BV + tl.arange(0, BV)
        m_tv = m_t[:, None] & (cv < V)[None, :]
        h = tl.load(hbuf + hb + ck[:, None] * V + cv[None, :], mask=(ck < K)[:, None] & (cv < V)[None, :], other=0.0)
        b_d = tl.load(vnew + (tt * HV + i_hv)[:, None] * V + cv[None, :], mask=m_tv, other=0.0)
        b_o = _mm(b_q.to(DT), h.to(DT)) * fq[:, None] + _mm(Aqk, b_d.to(DT))
        tl.store(o + (tt * HV + i_hv)[:, None] * V + cv[None, :], b_o.to(o.dtype.element_ty), mask=m_tv)


# ---------------------------------------------------------------------------------------- backward
@triton.jit
def _bwd_dlocal(
    q, k, gc, do, dvnew, rk, cinfo, scale, TT,
    H: tl.constexpr, HV: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
    BK: tl.constexpr, BV: tl.constexpr, L2: tl.constexpr, DT: tl.constexpr,
):
    """Intra-chunk part of d(delta): scale (k q^T * exp(gc_i - gc_j), i >= j) do, into dvnew (where the
    backward state pass does not compute it itself: FUSE_DL)."""
    i_c, i_hv, i_h, bos, eos, ck, rt, tt, m_t, m_tk = _chunk_prog(cinfo, H, HV, K, BK)
    b_q = _ld_rows(q, tt, i_h, ck, m_tk, H, K)
    b_k = _ld_rows(k, tt, i_h, ck, m_tk, H, K)
    # 1/||q|| computed again rather than read from _fwd_out's copy: reading it was slower (H100, session 8:
    # 0.383 -> 0.405 ms at Olmo-Hybrid 8x4096)
    rq = _rnorm(b_q, L2)
    b_rk = _ld_hm(rk, i_hv, TT, tt, m_t)
    b_g = tl.load(gc + tt * HV + i_hv, mask=m_t, other=0.0)
    KQ = _kq(_mm(b_k.to(DT), tl.trans(b_q.to(DT))), b_g, b_rk, rq, m_t, rt, scale, DT)
    for i_v in range(tl.cdiv(V, BV)):
        cv = i_v * BV + tl.arange(0, BV)
        m_tv = m_t[:, None] & (cv < V)[None, :]
        off = (tt * HV + i_hv)[:, None] * V + cv[None, :]
        b_do = tl.load(do + off, mask=m_tv, other=0.0).to(DT)
        tl.store(dvnew + off, _mm(KQ, b_do).to(dvnew.dtype.element_ty), mask=m_tv)


@triton.jit
def _kq(kq, b_g, rk, rq, m_t, rt, scale, DT: tl.constexpr):
    """The intra-chunk d(delta) weights from the raw products kq = k q^T: [j, i] = scale k_j.q_i exp(gc_i -
    gc_j) / (||k_j|| ||q_i||) for j <= i, else 0 (in DT)."""
    m_c = (rt[:, None] <= rt[None, :]) & _valid2(m_t)  # [j, i]: j <= i
    KQ = kq * tl.exp(tl.where(m_c, b_g[None, :] - b_g[:, None], float("-inf")))
    return (KQ * rk[:, None] * (rq * scale)[None, :]).to(DT)


@triton.jit
def _rev_chunk(NT, i_r, bos, eos, rt):
    """Step i_r of a backward state pass's reverse walk: the chunk (NT - 1 - i_r), its first token, the token
    of each row, and which rows hold a token."""
    i_t = NT - 1 - i_r
    t0 = bos + i_t * _BT
    tt = t0 + rt
    return i_t, t0, tt, tt < eos


@triton.jit
def _bstate_rows(gc, do, dvnew, rq, rk, tt, t0, eos, i_hv, cv, m_t, m_tv, TT, HV: tl.constexpr, V: tl.constexpr,
                 FUSE_DL: tl.constexpr = False):
    """The backward state pass's per-chunk rows: gc, the chunk's last gc, the [tokens, V block] offsets, do
    (fp32), the intra-chunk d(delta) from _bwd_dlocal (fp32; zeros with FUSE_DL, where the pass computes it),
    1/||q||, 1/||k||, and the factors exp(gL - gc) / ||k|| on k dh."""
    b_g = tl.load(gc + tt * HV + i_hv, mask=m_t, other=0.0)
    last = tl.minimum(t0 + _BT, eos) - 1
    gL = tl.load(gc + last * HV + i_hv)
    off_tv = (tt * HV + i_hv)[:, None] * V + cv[None, :]
    b_do = tl.load(do + off_tv, mask=m_tv, other=0.0).to(tl.float32)
    if FUSE_DL:
        b_dl = b_do * 0.0
    else:
        b_dl = tl.load(dvnew + off_tv, mask=m_tv, other=0.0).to(tl.float32)
    b_rq = _ld_hm(rq, i_hv, TT, tt, m_t)
    b_rk = _ld_hm(rk, i_hv, TT, tt, m_t)
    fk = tl.where(m_t, tl.exp(gL - b_g), 0.0) * b_rk
    return b_g, gL, off_tv, b_do, b_dl, b_rq, b_rk, fk


@triton.jit
def _bwd_state(
    q, k, w, gc, do, dht, dh0, dhbuf, dvnew, rq, rk, cu, coff, scale, TT,
    H: tl.constexpr, HV: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
    BK: tl.constexpr, BV: tl.constexpr, L2: tl.constexpr, DT: tl.constexpr,
    HAS_DHT: tl.constexpr, STORE_DH0: tl.constexpr,
):
    """Reverse pass over chunks: dh (stored per chunk) and d(delta) = dlocal + k exp(gL - gc) dh. The
    per-token factors (1/||q|| from _fwd_out, 1/||k|| from the forward prep, the decays) scale the [BT, BV] side of each
    product, so raw bf16 q and k feed the dots and no fp32 [BT, K] tile is built in the serial loop."""
    i_v, i_nh, i_hv, i_h, bos, eos, i_n = _seq_prog(cu, H, HV)
    c_off = tl.load(coff + i_n).to(tl.int64)
    ck = tl.arange(0, BK)
    cv = i_v * BV + tl.arange(0, BV)
    rt = tl.arange(0, _BT)
    m_kv = (ck < K)[:, None] & (cv < V)[None, :]
    s_off = ck[:, None] * V + cv[None, :]
    if HAS_DHT:
        dh = tl.load(dht + i_nh.to(tl.int64) * K * V + s_off, mask=m_kv, other=0.0).to(tl.float32)
    else:
        dh = tl.zeros([BK, BV], dtype=tl.float32)
    NT = tl.cdiv(eos - bos, _BT)
    for i_r in range(NT):
        i_t, t0, tt, m_t = _rev_chunk(NT, i_r, bos, eos, rt)
        m_tk = m_t[:, None] & (ck < K)[None, :]
        m_tv = m_t[:, None] & (cv < V)[None, :]
        tl.store(dhbuf + ((c_off + i_t) * HV + i_hv) * K * V + s_off, dh.to(dhbuf.dtype.element_ty), mask=m_kv)
        b_q = _ld_rows(q, tt, i_h, ck, m_tk, H, K)
        b_k = _ld_rows(k, tt, i_h, ck, m_tk, H, K)
        b_w = tl.load(w + (tt * HV + i_hv)[:, None] * K + ck[None, :], mask=m_tk, other=0.0)
        b_g, gL, off_tv, b_do, b_dl, b_rq, b_rk, fk = _bstate_rows(gc, do, dvnew, rq, rk, tt, t0, eos, i_hv, cv,
                                                                   m_t, m_tv, TT, HV, V)
        dd = (b_dl + _mm(b_k.to(DT), dh.to(DT)) * fk[:, None]).to(DT)
        tl.store(dvnew + off_tv, dd.to(dvnew.dtype.element_ty), mask=m_tv)
        fq = b_rq * scale * tl.exp(b_g)
        dog = (b_do * fq[:, None]).to(DT)
        dh = dh * tl.exp(gL) + _mm(tl.trans(b_q.to(DT)), dog) - _mm(tl.trans(b_w.to(DT)), dd)
    if STORE_DH0:
        tl.store(dh0 + i_nh.to(tl.int64) * K * V + s_off, dh, mask=m_kv)


@triton.jit
def _bwd_state_ks(
    q, k, w, gc, do, dht, dh0, dhbuf, dvnew, rq, rk, cu, coff, scale, TT,
    H: tl.constexpr, HV: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
    BK: tl.constexpr, BV: tl.constexpr, L2: tl.constexpr, DT: tl.constexpr,
    HAS_DHT: tl.constexpr, STORE_DH0: tl.constexpr, BK2: tl.constexpr, TB: tl.constexpr, FUSE_DL: tl.constexpr,
):
    """_bwd_state with the key columns in two blocks, [0, 64) and [64, 64 + BK2), for key dims that a power
    of two would pad by a third or more (Olmo-Hybrid's 96 in 64 + 32, not 128): the q, k and w tiles staged
    per chunk and the [K, BV] state shrink by the padding, which decides how many programs share an SM.

    TB: the second block's part of the state kept transposed ([BV, BK2]), so that its updates take q / w's
    [64, BK2] tiles as B operands from shared memory; as A operands of 32 rows (below wgmma's 64) they are
    loaded synchronously in every chunk (offline sm_90, Triton 3.6: 2 loads fewer staged, 56 B of stack, the
    same 105 KB of shared memory).

    FUSE_DL: the intra-chunk part of d(delta) (_bwd_dlocal's product) computed here from the q, k and do tiles
    the pass loads anyway, so that _bwd_dlocal does not run and d(delta) is written once, not written, read
    and written again. Both switches: CONFIG bstate_kt and bstate_fuse_dl."""
    i_v, i_nh, i_hv, i_h, bos, eos, i_n = _seq_prog(cu, H, HV)
    c_off = tl.load(coff + i_n).to(tl.int64)
    ca = tl.arange(0, 64)
    cb = 64 + tl.arange(0, BK2)
    cv = i_v * BV + tl.arange(0, BV)
    rt = tl.arange(0, _BT)
    m_av = (ca < K)[:, None] & (cv < V)[None, :]
    s_a = ca[:, None] * V + cv[None, :]
    if TB:
        m_bv = (cv < V)[:, None] & (cb < K)[None, :]
        s_b = cv[:, None] + cb[None, :] * V
    else:
        m_bv = (cb < K)[:, None] & (cv < V)[None, :]
        s_b = cb[:, None] * V + cv[None, :]
    if HAS_DHT:
        dh_a = tl.load(dht + i_nh.to(tl.int64) * K * V + s_a, mask=m_av, other=0.0).to(tl.float32)
        dh_b = tl.load(dht + i_nh.to(tl.int64) * K * V + s_b, mask=m_bv, other=0.0).to(tl.float32)
    else:
        dh_a = tl.zeros([64, BV], dtype=tl.float32)
        dh_b = tl.zeros([BV, BK2] if TB else [BK2, BV], dtype=tl.float32)
    NT = tl.cdiv(eos - bos, _BT)
    for i_r in range(NT):
        i_t, t0, tt, m_t = _rev_chunk(NT, i_r, bos, eos, rt)
        m_ta = m_t[:, None] & (ca < K)[None, :]
        m_tb = m_t[:, None] & (cb < K)[None, :]
        m_tv = m_t[:, None] & (cv < V)[None, :]
        sb = ((c_off + i_t) * HV + i_hv) * K * V
        tl.store(dhbuf + sb + s_a, dh_a.to(dhbuf.dtype.element_ty), mask=m_av)
        tl.store(dhbuf + sb + s_b, dh_b.to(dhbuf.dtype.element_ty), mask=m_bv)
        q_a = _ld_rows(q, tt, i_h, ca, m_ta, H, K)
        q_b = _ld_rows(q, tt, i_h, cb, m_tb, H, K)
        k_a = _ld_rows(k, tt, i_h, ca, m_ta, H, K)
        k_b = _ld_rows(k, tt, i_h, cb, m_tb, H, K)
        w_a = tl.load(w + (tt * HV + i_hv)[:, None] * K + ca[None, :], mask=m_ta, other=0.0)
        w_b = tl.load(w + (tt * HV + i_hv)[:, None] * K + cb[None, :], mask=m_tb, other=0.0)
        b_g, gL, off_tv, b_do, b_dl, b_rq, b_rk, fk = _bstate_rows(gc, do, dvnew, rq, rk, tt, t0, eos, i_hv, cv,
                                                                   m_t, m_tv, TT, HV, V, FUSE_DL)
        if FUSE_DL:  # _bwd_dlocal's product, from the q, k and do tiles loaded here anyway
            kq = _mm(k_a.to(DT), tl.trans(q_a.to(DT))) + _mm(k_b.to(DT), tl.trans(q_b.to(DT)))
            b_dl = _mm(_kq(kq, b_g, b_rk, b_rq, m_t, rt, scale, DT), b_do.to(DT))
        kdh = _mm(k_a.to(DT), dh_a.to(DT)) + _mm(k_b.to(DT), tl.trans(dh_b.to(DT)) if TB else dh_b.to(DT))
        dd = (b_dl + kdh * fk[:, None]).to(DT)
        tl.store(dvnew + off_tv, dd.to(dvnew.dtype.element_ty), mask=m_tv)
        fq = b_rq * scale * tl.exp(b_g)
        dog = (b_do * fq[:, None]).to(DT)
        eL = tl.exp(gL)
        dh_a = dh_a * eL + _mm(tl.trans(q_a.to(DT)), dog) - _mm(tl.trans(w_a.to(DT)), dd)
        if TB:
            dh_b = dh_b * eL + _mm(tl.trans(dog), q_b.to(DT)) - _mm(tl.trans(dd), w_b.to(DT))
        else:
            dh_b = dh_b * eL + _mm(tl.trans(q_b.to(DT)), dog) - _mm(tl.trans(w_b.to(DT)), dd)
    if STORE_DH0:
        tl.store(dh0 + i_nh.to(tl.int64) * K * V + s_a, dh_a, mask=m_av)
        tl.store(dh0 + i_nh.to(tl.int64) * K * V + s_b, dh_b, mask=m_bv)


@triton.jit
def _st_heads(ptr, x, tt, i_h, i_hv, ck, m_tk, H: tl.constexpr, HV: tl.constexpr, K: tl.constexpr, GA: tl.constexpr):
    """dq / dk of value head i_hv: added atomically into q/k head i_h's rows of a zeroed [tokens, H, K] output
    (GA), or stored into its own rows of [tokens, HV, K]."""
    if GA:
        tl.atomic_add(ptr + (tt * H + i_h)[:, None] * K + ck[None, :], x.to(ptr.dtype.element_ty), mask=m_tk,
                      sem="relaxed")
    else:
        tl.store(ptr + (tt * HV + i_hv)[:, None] * K + ck[None, :], x.to(ptr.dtype.element_ty), mask=m_tk)


@triton.jit
def _bwd_dqk(
    q, k, gc, hbuf, dhbuf, vnew, do, dq, dkp, dgp, cinfo, scale, rq_in, rk_in, TT,
    H: tl.constexpr, HV: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
    BK: tl.constexpr, BV: tl.constexpr, L2: tl.constexpr, DT: tl.constexpr, GA: tl.constexpr,
    RB: tl.constexpr = False,
):
    """Output-side gradients of one chunk: dq (final), and the dk / d(gc) parts to buffers for _bwd_wy. GA
    (grouped value heads): dq is added atomically into the zeroed [tokens, H, K] output, else stored per value
    head ([tokens, HV, K]; the driver sums grouped heads).

    RB: 1/||q|| and 1/||k|| read from the forward's buffers (rq_in, rk_in: [HV, TT]) rather than reduced from the q
    and k tiles here (CONFIG bchunk_norms)."""
    i_c, i_hv, i_h, bos, eos, ck, rt, tt, m_t, m_tk = _chunk_prog(cinfo, H, HV, K, BK)
    b_q = _ld_rows(q, tt, i_h, ck, m_tk, H, K)
    b_k = _ld_rows(k, tt, i_h, ck, m_tk, H, K)
    if RB:
        rq = _ld_hm(rq_in, i_hv, TT, tt, m_t)
        rk = _ld_hm(rk_in, i_hv, TT, tt, m_t)
    else:
        rq = _rnorm(b_q, L2)
        rk = _rnorm(b_k, L2)
    b_g = tl.load(gc + tt * HV + i_hv, mask=m_t, other=0.0)
    last = tl.minimum(bos + _BT, eos) - 1
    gL = tl.load(gc + last * HV + i_hv)
    hb = (i_c.to(tl.int64) * HV + i_hv) * K * V
    dq_h = tl.zeros([_BT, BK], dtype=tl.float32)   # do h^T
    dk_h = tl.zeros([_BT, BK], dtype=tl.float32)   # delta dh^T
    M = tl.zeros([_BT, _BT], dtype=tl.float32)     # do delta^T
    dgl = tl.zeros([BK], dtype=tl.float32)
    for i_v in range(tl.cdiv(V, BV)):
        cv = i_v * BV + tl.arange(0, BV)
        m_tv = m_t[:, None] & (cv < V)[None, :]
        m_kv = (ck < K)[:, None] & (cv < V)[None, :]
        off_tv = (tt * HV + i_hv)[:, None] * V + cv[None, :]
        h = tl.load(hbuf + hb + ck[:, None] * V + cv[None, :], mask=m_kv, other=0.0)
        dhn = tl.load(dhbuf + hb + ck[:, None] * V + cv[None, :], mask=m_kv, other=0.0)
        b_d = tl.load(vnew + off_tv, mask=m_tv, other=0.0).to(DT)
        b_do = tl.load(do + off_tv, mask=m_tv, other=0.0).to(DT)
        dq_h += _mm(b_do, tl.trans(h.to(DT)))
        dk_h += _mm(b_d, tl.trans(dhn.to(DT)))
        M += _mm(b_do, tl.trans(b_d))
        dgl += tl.sum(h.to(tl.float32) * dhn.to(tl.float32), 1)
    egc = tl.exp(b_g)
    m_c = (rt[:, None] >= rt[None, :]) & _valid2(m_t)
    Dm = tl.exp(tl.where(m_c, b_g[:, None] - b_g[None, :], float("-inf")))
    qn = b_q.to(tl.float32) * rq[:, None]
    kn = b_k.to(tl.float32) * rk[:, None]
    # inter-chunk output term: o += scale exp(gc) q h
    dqi = dq_h * (scale * egc)[:, None]
    dgc = tl.sum(dqi * qn, 1)
    # intra-chunk output term
    MD = M * Dm * scale
    QK = _mm(b_q.to(DT), tl.trans(b_k.to(DT))) * rq[:, None] * rk[None, :]
    P = MD * QK
    dgc += tl.sum(P, 1) - tl.sum(P, 0)
    b_dq = dqi + _mm((MD * rk[None, :]).to(DT), b_k.to(DT))
    b_dk = _mm(tl.trans((MD * rq[:, None]).to(DT)), b_q.to(DT))
    # state handed on: h' = exp(gL) h + (k exp(gL - gc))^T delta
    dkh = dk_h * tl.where(m_t, tl.exp(gL - b_g), 0.0)[:, None]
    b_dk += dkh
    t_kh = tl.sum(dkh * kn, 1)
    dgc -= t_kh
    dgL = tl.sum(t_kh, 0) + tl.exp(gL) * tl.sum(dgl, 0)
    dgc += tl.where(tt == last, dgL, 0.0)
    if L2:
        b_dq = (b_dq - qn * tl.sum(b_dq * qn, 1)[:, None]) * rq[:, None]
    _st_heads(dq, b_dq, tt, i_h, i_hv, ck, m_tk, H, HV, K, GA)
    tl.store(dkp + (tt * HV + i_hv)[:, None] * K + ck[None, :], b_dk.to(dkp.dtype.element_ty), mask=m_tk)
    tl.store(dgp + tt * HV + i_hv, dgc, mask=m_t)


@triton.jit
def _bwd_wy(
    k, v, gc, beta, Ai, hbuf, vnew, dvnew, dkp, dgp, dk, dv, dg, dbeta, cinfo, rk_in, TT,
    H: tl.constexpr, HV: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
    BK: tl.constexpr, BV: tl.constexpr, L2: tl.constexpr, DT: tl.constexpr, GA: tl.constexpr, TW: tl.constexpr = 1,
    PF: tl.constexpr = False, PFG: tl.constexpr = False, WS: tl.constexpr = False, RB: tl.constexpr = False,
):
    """Gradients through delta = u - w h, the WY form (w, u) and T = (I + A)^-1, added to the dk / d(gc)
    parts _bwd_dqk left in buffers (loaded after the V loop, so that they are not live through it): dk
    (as dq in _bwd_dqk), dv, dbeta, dg. (Both kernels in one program, the dk / d(gc) parts kept in registers,
    spilled 560-640 B a thread and was 43% slower on the H100: session 4.)

    With dvb = T^T ddelta, the gradient reaching A is dA = -T^T dT T^T, where dT = ddelta x^T and x = beta v -
    (beta exp(gc) k) h = (I + A) delta; since T (I + A) = I that is dA = -dvb delta^T: one product per V block
    with the forward's delta, in place of building dT (two products) and two more products with T; and
    d(beta exp(gc) k) = T^T dw = -dvb h^T is accumulated directly. H100 (session 6): the same time at
    Olmo-Hybrid, -2% / -8% at Qwen3-Next 8x4096 / 2x4096, dk and dg errors slightly lower."""
    i_c, i_hv, i_h, bos, eos, ck, rt, tt, m_t, m_tk = _chunk_prog(cinfo, H, HV, K, BK)
    if PF:  # the dk part (and with PFG the d(gc) part), which the epilogue reads after the V loop, into L2 now
        _pf_rows(dkp, (tt * HV + i_hv) * K, m_t, K)
        if PFG:
            _pf(dgp + tt * HV + i_hv, m_t)
    b_k = _ld_rows(k, tt, i_h, ck, m_tk, H, K)
    b_g = tl.load(gc + tt * HV + i_hv, mask=m_t, other=0.0)
    b_b = tl.load(beta + tt * HV + i_hv, mask=m_t, other=0.0).to(tl.float32)
    # T (TW = 2: with the remainder of its rounding, a second operand, so that dvb and dbeta see T to about fp32
    # precision: `_fwd_prep64`)
    ai = Ai + (tt * HV + i_hv)[:, None] * (TW * _BT) + rt[None, :]
    b_T = tl.load(ai, mask=m_t[:, None], other=0.0).to(DT)
    if TW == 2:
        b_Tl = tl.load(ai + _BT, mask=m_t[:, None], other=0.0).to(DT)
    hb = (i_c.to(tl.int64) * HV + i_hv) * K * V
    dkb = tl.zeros([_BT, BK], dtype=tl.float32)    # d(beta exp(gc) k) = -dvb h^T
    dA = tl.zeros([_BT, _BT], dtype=tl.float32)    # -dvb delta^T
    Mv = tl.zeros([_BT, _BT], dtype=tl.float32)    # ddelta v^T
    for i_v in range(tl.cdiv(V, BV)):
        cv = i_v * BV + tl.arange(0, BV)
        m_tv = m_t[:, None] & (cv < V)[None, :]
        m_kv = (ck < K)[:, None] & (cv < V)[None, :]
        off_tv = (tt * HV + i_hv)[:, None] * V + cv[None, :]
        h = tl.load(hbuf + hb + ck[:, None] * V + cv[None, :], mask=m_kv, other=0.0).to(DT)
        b_dd = tl.load(dvnew + off_tv, mask=m_tv, other=0.0).to(DT)
        b_v = tl.load(v + off_tv, mask=m_tv, other=0.0).to(DT)
        # u = T (beta v): d(beta v) = T^T ddelta
        dvb = _mm(tl.trans(b_T), b_dd)
        if TW == 2:
            dvb += _mm(tl.trans(b_Tl), b_dd)
        tl.store(dv + off_tv, (dvb * b_b[:, None]).to(dv.dtype.element_ty), mask=m_tv)
        Mv += _mm(b_dd, tl.trans(b_v))
        b_dl = tl.load(vnew + off_tv, mask=m_tv, other=0.0).to(DT)
        dvb_c = dvb.to(DT)
        dkb -= _mm(dvb_c, tl.trans(h))
        dA -= _mm(dvb_c, tl.trans(b_dl))
    # dbeta from u: sum_j (T^T ddelta)_ij v_ij = sum_k T_ki (ddelta v^T)_ki. Accumulating ddelta v^T as a dot
    # makes v a dot operand, which Triton's pipeliner then loads ahead (a row sum of T^T ddelta * v in the
    # loop left v a synchronous load in every V block). H100 (session 7): `_bwd_wy` 1.648 -> 1.437 ms at
    # Olmo-Hybrid 8x4096, 1.581 -> 1.514 at Qwen3-Next
    T32 = b_T.to(tl.float32)
    if TW == 2:
        T32 += b_Tl.to(tl.float32)
    db = tl.sum(T32 * Mv, 0)
    # 1/||k|| after the V loop: before it, the row reduction waited for k and held up the loop's first loads
    # (H100, session 6: `_bwd_wy` 1.850 -> 1.764 ms Olmo-Hybrid 8x4096, 1.877 -> 1.775 Qwen3-Next)
    if RB:  # from the forward's buffer (CONFIG bchunk_norms)
        rk = _ld_hm(rk_in, i_hv, TT, tt, m_t)
    else:
        rk = _rnorm(b_k, L2)
    b_dkp = tl.load(dkp + (tt * HV + i_hv)[:, None] * K + ck[None, :], mask=m_tk, other=0.0)
    b_dgp = tl.load(dgp + tt * HV + i_hv, mask=m_t, other=0.0)
    egc = tl.exp(b_g)
    kn = b_k.to(tl.float32) * rk[:, None]
    # w = T (beta exp(gc) k)
    fb = b_b * egc
    b_dk = b_dkp.to(tl.float32) + dkb * fb[:, None]
    t_kb = tl.sum(dkb * kn, 1)
    db += t_kb * egc
    dgc = b_dgp + t_kb * fb
    # A (strictly lower) = beta k k^T exp(gc_i - gc_j)
    m_s = (rt[:, None] > rt[None, :]) & _valid2(m_t)
    E = tl.exp(tl.where(m_s, b_g[:, None] - b_g[None, :], float("-inf")))
    KK = _mm(b_k.to(DT), tl.trans(b_k.to(DT))) * rk[:, None] * rk[None, :]
    dAE = tl.where(m_s, dA * E, 0.0)
    dAEb = dAE * b_b[:, None]
    if WS:  # both of A's key products in one: (dAEb diag(1/||k||) + (diag(1/||k||) dAEb)^T) k (CONFIG wy_sum_dk)
        b_dk += _mm((dAEb * rk[None, :] + tl.trans(dAEb * rk[:, None])).to(DT), b_k.to(DT))
    else:
        b_dk += _mm((dAEb * rk[None, :]).to(DT), b_k.to(DT)) + _mm(tl.trans((dAEb * rk[:, None]).to(DT)), b_k.to(DT))
    db += tl.sum(dAE * KK, 1)
    dAA = dAEb * KK
    dgc += tl.sum(dAA, 1) - tl.sum(dAA, 0)
    # g: gc = cumsum(g) within the chunk -> dg = reverse cumsum of dgc
    dgc = tl.where(m_t, dgc, 0.0)
    b_dg = tl.sum(dgc, 0) - tl.cumsum(dgc, 0) + dgc
    if L2:
        b_dk = (b_dk - kn * tl.sum(b_dk * kn, 1)[:, None]) * rk[:, None]
    _st_heads(dk, b_dk, tt, i_h, i_hv, ck, m_tk, H, HV, K, GA)
    tl.store(dg + tt * HV + i_hv, b_dg.to(dg.dtype.element_ty), mask=m_t)
    tl.store(dbeta + tt * HV + i_hv, db.to(dbeta.dtype.element_ty), mask=m_t)


# ------------------------------------------------------------------------------------------ driver
@functools.lru_cache(maxsize=64)
def _meta(cu: tuple, device: str):
    starts, ends, coff = [], [], []
    for n in range(len(cu) - 1):
        coff.append(len(starts))
        for s in range(cu[n], cu[n + 1], BT):
            starts.append(s)
            ends.append(min(s + BT, cu[n + 1]))
    cinfo = torch.tensor([x for pair in zip(starts, ends) for x in pair] or [0, 0], dtype=torch.int32, device=device)
    return (
        cinfo,
        len(starts),
        torch.tensor(cu, dtype=torch.int32, device=device),
        torch.tensor(coff or [0], dtype=torch.int32, device=device),
    )


@functools.lru_cache(maxsize=64)
def _groups(cu: tuple, S: int, device: str):
    """The output's groups (`_fwd_out`): each sequence's chunks S at a time from its first. Per group four int32s,
    its first and end token, its first chunk's index and its own index (where the state pass stores h: `_fwd_out`'s
    HS), then the number of groups and each sequence's first group (the state pass's coff where it stores per
    group)."""
    rows, goff, c = [], [], 0
    for n in range(len(cu) - 1):
        goff.append(len(rows))
        for s in range(cu[n], cu[n + 1], BT * S):
            rows.append((s, min(s + BT * S, cu[n + 1]), c, len(rows)))
            c += _cdiv(min(s + BT * S, cu[n + 1]) - s, BT)
    ginfo = torch.tensor([x for r in rows for x in r] or [0, 0, 0, 0], dtype=torch.int32, device=device)
    return ginfo, len(rows), torch.tensor(goff or [0], dtype=torch.int32, device=device)


# Shared memory of `_fwd_out` on pairs of chunks (128 rows, V block 64, 2 stages) by key block (offline, Triton 3.6,
# sm_90; sm_80 / sm_89 take the same or less: 152 KB at 256). One chunk a program takes 24-120 KB. Ada and consumer
# parts allow 99 KB a program, so there a key block of 128 keeps one chunk (session 15).
_SMEM_OUT2 = {64: 40960, 128: 106496, 256: 172032}


def out_chunks(fp32: bool, BK: int = 128, device: str = "cpu") -> int:
    """Chunks a `_fwd_out` program covers: CONFIG out_chunks, 1 on the fp32 path (exact [128, 128] products on FMA
    units) and where the device has less shared memory than the pair's kernel takes at key block BK (`_SMEM_OUT2`).
    Any other setting than 1 or 2 is a KernelEnvError (one line and exit status 2 from the CLI) before anything
    runs: `launches` asks this first."""
    if CONFIG["out_chunks"] not in (1, 2):  # the kernel's rows: 64 S, a power of two within its registers
        raise KernelEnvError(f"HPT_GDN_CONFIG: out_chunks={CONFIG['out_chunks']}: expected 1 or 2")
    S = 1 if fp32 else CONFIG["out_chunks"]
    if S > 1 and _max_smem(str(device)) < _SMEM_OUT2[max(64, BK)]:
        return 1
    return S


_TL = {torch.float32: tl.float32, torch.bfloat16: tl.bfloat16, torch.float16: tl.float16}


def _cfg(K, V, bv=None):
    BK = max(16, _np2(K))
    bv = bv or CONFIG["bv"]
    # A V block never wider than V itself (largest power of two <= V): with a 64-wide block over
    # V=48 an illegal address was seen on H100 / Triton 3.6 in the backward (cause not established).
    BV = min(bv, max(16, 1 << (max(V, 1).bit_length() - 1)))
    return BK, BV


@functools.lru_cache(maxsize=8)
def _n_sm(device: str) -> int:
    return torch.cuda.get_device_properties(device).multi_processor_count if device.startswith("cuda") else 1


@functools.lru_cache(maxsize=8)
def _max_smem(device: str) -> int:
    """Shared memory a program may opt in to on this device (bytes; unlimited off CUDA, e.g. the
    interpreter): H100 227 KB, A100 163 KB, Ada / Ampere consumer parts about 99 KB."""
    if not device.startswith("cuda"):
        return 1 << 30
    idx = torch.device(device).index
    idx = torch.cuda.current_device() if idx is None else idx
    return triton.runtime.driver.active.utils.get_device_properties(idx)["max_shared_mem"]


# Shared memory of the state passes on 3 stages at key blocks up to 128 (offline, sm_90, Triton 3.6; the
# largest V block each rule picks: `_fwd_state` V block 64, `_bwd_state` 64). Where the device has less,
# the passes keep their 2-stage settings (`benchmarks/results/session10/offline_state_stages.txt`).
_SMEM_FWD3 = 140296
_SMEM_BWD3 = 206856
# ... and of the one-block `_bwd_state` on 8 warps and 3 stages (bstate_*_few) at Olmo-Hybrid's key block of
# 128 (96 padded), V block 64: 240 registers, no stack (offline as above, session 11)
_SMEM_BWD3_FEW = 215048


@functools.lru_cache(maxsize=8)
def _native_atomic_add(dtype, device: str) -> bool:
    """Whether atomic adds of dtype run as one instruction: bf16 needs compute capability 9.0 (Hopper); before
    that Triton emits a compare-and-swap loop, so the grouped-head sum takes the elementwise add instead."""
    if dtype != torch.bfloat16 or not device.startswith("cuda"):
        return True
    return torch.cuda.get_device_capability(device)[0] >= 9


def _state_bv(K, V, n_seq_heads, bv, device, one_wave=False):
    """V block of a state pass (one program per sequence, value head and V block, each walking every chunk of
    its sequence in turn). Few long sequences (1 x 32768) leave fewer programs than SMs. one_wave (the
    backward, and the forward on 3 stages: one program per SM): halve the block (down to state_bv_min) while
    the halved grid still fits in one wave. H100 (session 5): Qwen3-Next 1 x 32768 (64 -> 128 programs)
    `_bwd_state` 1.36 -> 1.18 ms; halving at Olmo-Hybrid 1 x 32768 (90 -> 180 programs, two waves) 1.56 ->
    2.26 ms, which this rule does not do; with the split key columns (`_bwd_state_ks`, two programs per SM by
    shared memory) 180 programs still took 1.584 -> 1.936 ms (session 7). Otherwise (the forward on 2
    stages): halve until the grid covers the SMs. n_seq_heads None: no adjustment."""
    _, BV = _cfg(K, V, bv)
    n_sm = _n_sm(str(device))
    while n_seq_heads is not None and BV > CONFIG["state_bv_min"]:
        n = n_seq_heads * _cdiv(V, BV)
        if (2 * n > n_sm) if one_wave else (n >= n_sm):
            break
        BV //= 2
    return BV


def _fwd_state_launch(K, V, n_seq_heads, device, fp32):
    """(V block, stages) of the forward state pass. A grid that fills the SMs at the configured block keeps
    it, on state_stages. A smaller one (few long sequences: 1 x 32768, or 2 x 4096 at Qwen3-Next) takes
    state_stages_few (3), and the block is halved while the grid stays within one program per SM (the pass
    is a chain of dependent steps, so one program per SM with its loads a whole step ahead beats more,
    smaller programs: H100, session 10, Qwen3-Next 1 x 32768 on 3 stages, 256 programs of 16 columns 0.811
    ms, 128 of 32 0.695, 64 of 64 0.934). The fp32 path (at most 32 columns, twice the shared memory a
    tile) halves the block until the grid covers the GPU, on state_stages (the rule before session 10:
    H100, session 6, Qwen3-Next 1 x 32768 on 2 stages 1.060 -> 0.938 ms from 128 to 256 programs), as do
    key blocks over 128 and devices with less shared memory than 3 stages take (_SMEM_FWD3)."""
    c = CONFIG
    BK, BV = _cfg(K, V, c["state_bv"])
    n_sm = _n_sm(str(device))
    if (fp32 or n_seq_heads is None or n_seq_heads * _cdiv(V, BV) > n_sm or BK > 128
            or _max_smem(str(device)) < _SMEM_FWD3):
        BV = _state_bv(K, V, n_seq_heads, c["state_bv"], device)
        return (min(BV, 32) if fp32 else BV), c["state_stages"]
    return _state_bv(K, V, n_seq_heads, c["state_bv"], device, one_wave=True), c["state_stages_few"]


def _ksplit(K):
    """Second key block of the split-key backward state pass (`_bwd_state_ks`: key columns [0, 64) and
    [64, 64 + this)), or 0 where one power-of-two block pads little (K <= 64, or 64 + the block would not be
    below it: K = 128) or the split is switched off (CONFIG bstate_ksplit)."""
    BK = max(16, _np2(K))
    if not CONFIG["bstate_ksplit"] or K <= 64:
        return 0
    b2 = max(16, _np2(K - 64))
    return b2 if 64 + b2 < BK else 0


def bstate_kernel(K, n_programs=None, device="cpu"):
    """The backward state pass the driver runs, and its extra constexprs: the split-key `_bwd_state_ks` where
    `_ksplit` gives a second block and the grid exceeds the SMs (n_programs None: assumed to), else
    `_bwd_state`. With one program per SM and fewer programs than SMs (Olmo-Hybrid 1x32768: 90) each
    program's serial chain decides the time, and the split's (255 registers, 56 B of stack) was slower there:
    1.584 -> 1.950 ms (H100, session 7). The split pass computes _bwd_dlocal's product itself (FUSE_DL) where
    it has at least bstate_fuse_min programs per SM (see CONFIG). Also read by benchmarks/gdn.py --resources."""
    BK2 = _ksplit(K)
    n_sm = _n_sm(str(device))
    if BK2 and (n_programs is None or n_programs > CONFIG["bstate_ks_min"] * n_sm):
        fuse = CONFIG["bstate_fuse_dl"] and (n_programs is None or n_programs >= CONFIG["bstate_fuse_min"] * n_sm)
        return _bwd_state_ks, {"BK2": BK2, "TB": bool(CONFIG["bstate_kt"]), "FUSE_DL": bool(fuse)}
    return _bwd_state, {}


def launches(K, V, fp32, n_seq_heads=None, device="cpu"):
    """{kernel name: (V block, warps, stages, register cap or None)} as the driver launches every kernel, from
    CONFIG (also read by benchmarks/gdn.py --resources, so the offline numbers are for what runs). fp32 tiles
    take twice the shared memory (V blocks of at most 32 where that matters) and the exact fp32 products run
    on FMA units (more warps for the two kernels that would spill; no register cap: it would spill more).

    Remembered (`_launches`) per arguments, CONFIG's settings and the device's SM count and shared memory, which
    is all it reads: working it out took about 50 us of the host's time in every forward and backward on the H100
    machine (session 18)."""
    dev = str(device)
    return dict(_launches(K, V, fp32, n_seq_heads, dev, _n_sm(dev), _max_smem(dev), tuple(CONFIG.items())))


@functools.lru_cache(maxsize=256)
def _launches(K, V, fp32, n_seq_heads, device, _n_sm_now, _smem_now, _config_now):
    """`launches`, worked out (the last three arguments only key the cache)."""
    c = CONFIG

    def bv(key, cap=False):
        b = _cfg(K, V, c[key])[1]
        return min(b, 32) if cap and fp32 else b

    BK = _cfg(K, V)[0]
    fp = "_fp32" if fp32 else ""
    fbv, fstages = _fwd_state_launch(K, V, n_seq_heads, device, fp32)
    # bstate_stages_pow2k: key dims that fill their block (no padded columns), up to 128, bf16 / fp16, and a
    # device with the shared memory 3 stages take
    smem = _max_smem(str(device))
    bstate_pow2k = not fp32 and (K & (K - 1)) == 0 and K <= 128 and smem >= _SMEM_BWD3
    bbv = _state_bv(K, V, n_seq_heads, c["bstate_bv"], device, one_wave=True)
    bwarps = c["bstate_warps" + fp]
    bstages = c["bstate_stages_pow2k"] if bstate_pow2k else c["bstate_stages" + fp]
    # bstate_*_few: a padded key block (up to 128) on the one-block pass with fewer programs than SMs
    if not fp32 and not bstate_pow2k and n_seq_heads is not None and smem >= _SMEM_BWD3_FEW and K <= 128:
        n_prog = n_seq_heads * _cdiv(V, bbv)
        if n_prog <= _n_sm(str(device)) and bstate_kernel(K, n_prog, device)[0] is _bwd_state:
            bwarps, bstages = c["bstate_warps_few"], c["bstate_stages_few"]
    if not fp32 and BK > 128:  # bstate_*_wide
        bbv, bwarps = min(bbv, bv("bstate_bv_wide")), c["bstate_warps_wide"]
    wy_bv = bv("bchunk_bv", cap=True)
    wy_stages = c["bchunk_stages_2vb" if not fp32 and _cdiv(V, wy_bv) <= 2 else "bchunk_stages"]
    bchunk = (wy_bv, c["bchunk_warps"], wy_stages, None)
    dqk = (bchunk[0], c["dqk_warps"], c["dqk_stages"], None)
    return {
        "_fwd_prep": (bv("bv"), c["prep_warps"], 3, None),
        "_fwd_prep64": (bv("prep64_bv"), c["prep64_warps" + fp], 3, None if fp32 else c["prep64_maxnreg"] or None),
        "_fwd_state": (fbv, c["state_warps"], fstages, None),
        "_fwd_out": (bv("out_bv"), c["out2_warps" if out_chunks(fp32, BK, device) > 1 else "out_warps"],
                     c["out_stages"], None),
        "_bwd_dlocal": (bv("out_bv"), c["dl_warps"], c["dl_stages"], None),
        "_bwd_state": (bbv, bwarps, bstages, None),
        "_bwd_dqk": dqk,
        "_bwd_wy": bchunk,
    }


def refuse_broken(L, fp32):
    """KernelEnvError for launch settings (`launches`' L) that compile but fail on the H100 with Triton 3.6
    (session 9, benchmarks/results/session9/call5-6; every other variant tried gave bit-identical results):
    `_fwd_state` on 1 pipeline stage gives wrong outputs (relative error 6-8 at Qwen3-Next's V blocks 64, 32,
    16 and Olmo-Hybrid's 32, 16), and the backward state pass on 1 stage outside the fp32 path (measured on
    bf16) hit an illegal memory access (Qwen3-Next, V block 32). The fp32 backward's default of 1 stage (8
    warps) passes the GPU tests and agrees bit for bit with 2 stages. Called by the forward for both passes, so
    a refused backward setting stops before anything runs."""
    if L["_fwd_state"][2] < 2:
        raise KernelEnvError(f"GDN launch settings: {L['_fwd_state'][2]} stage(s) for _fwd_state (state_stages / "
                             "state_stages_few) gives wrong outputs on the H100 with Triton 3.6; use 2 or more")
    if not fp32 and L["_bwd_state"][2] < 2:
        raise KernelEnvError(f"GDN launch settings: {L['_bwd_state'][2]} stage(s) for the backward state pass "
                             "(bstate_stages / bstate_stages_pow2k / bstate_stages_few) faults on the H100 with "
                             "Triton 3.6 (illegal memory access); use 2 or more")


def wy_prefetch_flags(nvidia: bool, fp32: bool) -> dict:
    """The L2-prefetch constexprs of `_bwd_wy` (`_pf`; also read by benchmarks/gdn.py --resources, which compiles for
    sm_90): PF, its dk part, with CONFIG pf_wy, on an NVIDIA GPU (the interpreter runs no inline assembly, and ROCm
    no PTX) and off the fp32 path (exact products on FMA units, another kernel); PFG, its d(gc) part too, where PF
    and CONFIG pf_wy_dgp."""
    pf = bool(CONFIG["pf_wy"]) and nvidia and not fp32
    return {"PF": pf, "PFG": pf and bool(CONFIG["pf_wy_dgp"])}


def bchunk_flags() -> dict:
    """The CONFIG-set constexpr that `_bwd_dqk` and `_bwd_wy` share: RB, the row norms read from the forward's buffers
    (CONFIG bchunk_norms). The driver and benchmarks/gdn.py --resources both take it from here."""
    return {"RB": bool(CONFIG["bchunk_norms"])}


def wy_flags(nvidia: bool, fp32: bool) -> dict:
    """Every CONFIG-set constexpr of `_bwd_wy`, as the driver launches it (also read by benchmarks/gdn.py --resources,
    so that the two cannot differ): its L2 prefetch (`wy_prefetch_flags`), WS, its two key products through A as
    one (CONFIG wy_sum_dk), and `bchunk_flags`."""
    return {**wy_prefetch_flags(nvidia, fp32), "WS": bool(CONFIG["wy_sum_dk"]), **bchunk_flags()}


def _on_nvidia(x: torch.Tensor) -> bool:
    """Whether x lives on an NVIDIA GPU (CUDA, not ROCm)."""
    return x.is_cuda and torch.version.hip is None


def _chunk_grid(NC, HV):
    """Grid of the per-chunk kernels: (value heads, chunks) with heads_fast, else (chunks, value heads);
    chunk-major beyond the grid's 65535 limit on its second axis. Heads next to each other means the
    programs running at once read one contiguous block of every token-major [tokens, heads, dim] tensor (and
    grouped heads' shared q / k rows come from L2 the second time), instead of one head's rows of many
    chunks, 64 x heads rows apart."""
    return (HV, NC) if CONFIG["heads_fast"] and NC <= 65535 else (NC, HV)


def prep64_flags(l2: bool, fp32: bool) -> dict:
    """The precision constexprs of `_fwd_prep64` (also read by benchmarks/gdn.py --resources).

    F16: its last two block-doubling levels (`_merge64`) on fp16 operands rather than TF32, with CONFIG inv_f16,
    L2-normalised keys (then |A_ij| = beta_i |k_i.k_j| exp(gc_i - gc_j) <= 2, and the entries of T and of the
    products stay within a few units, far inside fp16's range; raw keys have no such bound) and outside the fp32
    path (exact products). fp16 keeps TF32's 10-bit mantissa. H100 (session 14, call 5): `_fwd_prep64` 0.610 ->
    0.577 ms (Olmo-Hybrid 8x4096), 0.604 -> 0.561 (Qwen3-Next); fwd 1.931 -> 1.899 / 1.645 -> 1.600; the results
    moved by 8e-4 (o) to 2e-3 (dk) against TF32.

    SPLIT: T fed to the w and u products as two half-precision operands (`_hi_lo`; CONFIG prep_split_t), off the
    fp32 path, where T is exact already.

    TW: 2 where T is stored for the backward with the remainder of its rounding (CONFIG bwd_split_t, off the fp32
    path), which `_bwd_wy` then takes as a second operand, else 1."""
    return {"F16": bool(CONFIG["inv_f16"]) and l2 and not fp32, "SPLIT": bool(CONFIG["prep_split_t"]) and not fp32,
            "TW": 2 if CONFIG["bwd_split_t"] and not fp32 else 1}


def _prep_kernel(BK):
    """_fwd_prep64 gave wrong bf16 outputs (o, dq 6e-2 to 2e-1 off; the state and dv right) at K=24 (a 32-wide
    key block) on the H100 with Triton 3.6, while the interpreter and fp32 pass there and every check at
    K = 96 / 128 passes: cause not established, so key blocks under 64 take _fwd_prep."""
    return _fwd_prep64 if CONFIG["prep"] == "64" and BK >= 64 else _fwd_prep


_FITTED: dict = {}  # (kernel, launch keywords, device) -> the pipeline stages that fit (`_run`)


def _run(kernel, grid, *args, **kw):
    """kernel[grid](*args, **kw) (through `kernels/_launch.py`) for a per-chunk kernel, on fewer pipeline stages where
    the device has too little shared memory for the configured ones (Triton raises OutOfResources at the first launch of such a compiled
    kernel). Offline (Triton 3.6), `_bwd_dqk` on its 4 stages takes 176 KB at key blocks up to 128 on sm_80 / sm_89,
    over the 163 KB a program may use on an A100 (99 KB on Ada and consumer parts), and `_bwd_wy` on 3 stages 104 KB
    (session 15). The stages that fit are remembered per kernel, launch keywords and device. Not for the state
    passes: their stages have rules of their own (`launches`, `refuse_broken`)."""
    key = (kernel.__name__, frozenset(kw.items()), str(args[0].device))  # the configured stages among kw
    stages = _FITTED.get(key, kw.get("num_stages", 1))
    while True:
        try:
            out = launch(kernel, grid, *args, **dict(kw, num_stages=stages))
        except OutOfResources as e:
            if stages <= 1:
                raise _too_big(kernel, dict(kw, num_stages=stages), e) from None
            stages -= 1
            continue
        _FITTED[key] = stages
        return out


def _too_big(kernel, kw, e):
    """The KernelEnvError (one line, exit status 2 from the CLI) for a kernel that does not fit on this device at
    any setting the driver tries: Triton's OutOfResources at launch, with the head dims that decide its size."""
    dims = ", ".join(f"{n}={kw[n]}" for n in ("K", "V", "BV", "num_warps", "num_stages") if n in kw)
    return KernelEnvError(f"GDN kernel {kernel.__name__} ({dims}) needs {e.required} of {e.name}, over the "
                          f"{e.limit} this GPU allows: smaller head dims, or HPT_GDN_CONFIG with smaller V blocks")


def _launch(kernel, grid, *args, **kw):
    """kernel[grid](*args, **kw) (through `kernels/_launch.py`) for a state pass (its settings are fixed by `launches`,
    not dropped as `_run` does), with a kernel that does not fit on the device as a KernelEnvError (`_too_big`)."""
    try:
        return launch(kernel, grid, *args, **kw)
    except OutOfResources as e:
        raise _too_big(kernel, kw, e) from None


def _kw(L, name, const):
    """Launch keywords of kernel `name`: the shared constexprs, its V block, warps, stages and register cap
    from L."""
    bv, nw, ns, nreg = L[name]
    return dict(const, BV=bv, num_warps=nw, num_stages=ns, **({"maxnreg": nreg} if nreg else {}))


class _Part(NamedTuple):
    """Chunks [c0, c1) of a state pass's walk (`_walk`) and what its launches take: the [first, end) tokens of each
    sequence (the pass's cu), each sequence's first chunk (its coff), the output's groups [g0, g1) (`_groups`), and
    each sequence's first group (the pass's coff where it stores per group)."""
    c0: int
    c1: int
    cu: torch.Tensor
    coff: torch.Tensor
    g0: int
    g1: int
    goff: torch.Tensor


@functools.lru_cache(maxsize=64)
def _parts(cu: tuple, n_parts: int, device: str, align: int = 1):
    """The parts of one sequence (cu = (0, T)), as `_Part`s. Equal parts: smaller first and last parts (so
    that the serial pass starts sooner and the per-chunk kernels after it end sooner) were no faster on the
    H100 (session 13, 1x32768, 3 or 4 parts with ends of a half or a quarter: Qwen3-Next fwd 1.683 -> 1.697 to
    1.741 ms, Olmo-Hybrid 1.880 -> 1.904 to 2.001; the backward within 0.5%). Parts start at multiples of align
    chunks, so that each holds whole groups of the forward's output (`_groups`)."""
    T = cu[-1]
    NT = _cdiv(T, BT)
    NA = _cdiv(NT, align)
    bounds = [min(NT, align * (NA * p // n_parts)) for p in range(n_parts + 1)]
    return tuple(
        _Part(c0, c1, torch.tensor([c0 * BT, min(c1 * BT, T)], dtype=torch.int32, device=device),
              torch.tensor([c0], dtype=torch.int32, device=device), c0 // align, _cdiv(c1, align),
              torch.tensor([c0 // align], dtype=torch.int32, device=device))
        for c0, c1 in zip(bounds, bounds[1:]))


def n_parts(n_seq, n_chunks, n_state_programs, device="cpu", backward=False):
    """How many parts the forward or the backward runs in (`_fwd`, `_bwd`; 1: not split): CONFIG state_parts /
    bstate_parts where there is one sequence and its state pass leaves SMs free (no more programs than SMs; the
    backward: bstate_parts_load x SMs), fewer where parts would hold fewer than state_parts_min chunks."""
    P = CONFIG["bstate_parts" if backward else "state_parts"]
    load = CONFIG["bstate_parts_load"] if backward else 1.0
    if P < 2 or n_seq != 1 or n_state_programs > load * _n_sm(str(device)):
        return 1
    return max(1, min(P, n_chunks // max(1, CONFIG["state_parts_min"])))


def _walk(cu, P, first, last, hkv, dev, reverse=False, align=1):
    """How a state pass walks one sequence in P parts (`_parts`, at multiples of align chunks; P = 1: the one part
    that is the whole batch, with its groups of align chunks, `_groups`): the
    parts in walk order (reverse: the last part first, as the backward walks), the fp32 state (or state
    gradient) entering the i-th part walked and leaving it, at [i] and [i + 1] of a list that starts with
    `first` and ends with `last` (None: none; two [1, HV, K, V] buffers take turns in between), and the side
    and current streams (None, None on the CPU or with one part)."""
    if P > 1:
        parts = _parts(cu, P, str(dev), align)[::-1 if reverse else 1]
    else:
        _, NC, cu_t, coff = _meta(cu, str(dev))
        _, NG, goff = _groups(cu, align, str(dev))
        parts = (_Part(0, NC, cu_t, coff, 0, NG, goff),)
    mid = [_empty(1, *hkv, dtype=torch.float32, device=dev) for _ in range(min(2, P - 1))]
    carries = [first] + [mid[i % 2] for i in range(P - 1)] + [last]
    side = _side_stream(str(dev), CONFIG["state_parts_priority"]) if P > 1 and dev.type == "cuda" else None
    return parts, carries, side, (torch.cuda.current_stream(dev) if side is not None else None)


@functools.lru_cache(maxsize=8)
def _side_stream(device: str, priority: int):
    """The stream the state passes' parts run on (forward and backward): high priority (CONFIG state_parts_priority), so that its
    programs take SMs before the prep / output programs that run beside it."""
    return torch.cuda.Stream(device=device, priority=priority)


def _recorded(stream):
    """An event recorded on stream now; None without a stream (one part, or the CPU)."""
    if stream is None:
        return None
    ev = torch.cuda.Event()
    ev.record(stream)
    return ev


@contextlib.contextmanager
def _after(stream, event):
    """Launches inside go to stream, behind event; without a stream, to the current one as they come."""
    if stream is None:
        yield
        return
    stream.wait_event(event)
    with torch.cuda.stream(stream):
        yield


def _gluon_takes(usable: bool, programs: int, name: str, dev) -> bool:
    """Whether the Gluon kernel CONFIG[name] takes a launch of `programs` programs: it can run there (usable: its
    module's `usable`) and the launch has at least CONFIG[name + "_min"] programs an SM, enough GPU work to hide the
    host's cost of its TMA descriptors."""
    return usable and programs >= CONFIG[f"{name}_min"] * _n_sm(str(dev))


def _fwd(q, k, v, g, beta, scale, h0, store_ht, cu, l2, grad=True):
    """grad False (no backward to follow): T, which only the backward reads, is not stored."""
    TT, H, K = q.shape
    HV, V = v.shape[1], v.shape[2]
    dev = q.device
    cinfo, NC, _, _ = _meta(cu, str(dev))
    N = len(cu) - 1
    BK = _cfg(K, V)[0]
    DT = _TL[q.dtype]
    cdt = q.dtype
    L = launches(K, V, q.dtype == torch.float32, N * HV, dev)
    refuse_broken(L, q.dtype == torch.float32)
    gc = _empty(TT, HV, dtype=torch.float32, device=dev)
    rk = _empty(HV, TT, dtype=torch.float32, device=dev)  # per-row 1/||k|| (ones without L2), head-major
    rq = _empty(HV, TT, dtype=torch.float32, device=dev)  # the same for q (from _fwd_out)
    prep = _prep_kernel(BK)
    pflags = prep64_flags(l2, q.dtype == torch.float32) if prep is _fwd_prep64 else {}
    Ai = _empty(TT, HV, BT * pflags.get("TW", 1), dtype=cdt, device=dev) if grad else gc
    w = _empty(TT, HV, K, dtype=cdt, device=dev)
    u = _empty(TT, HV, V, dtype=cdt, device=dev)
    # the output's groups of S chunks (`_fwd_out`); without a backward the state pass stores only their states
    S = out_chunks(q.dtype == torch.float32, BK, dev)
    HS = 1 if grad else S
    ginfo, NG, _ = _groups(cu, S, str(dev))  # (`_walk` gives each part its groups)
    hbuf = _empty(max(NC if HS == 1 else NG, 1), HV, K, V, dtype=cdt, device=dev)
    vnew = _empty(TT, HV, V, dtype=cdt, device=dev)
    o = _empty(TT, HV, V, dtype=v.dtype, device=dev)
    ht = _empty(N, HV, K, V, dtype=torch.float32, device=dev) if store_ht else None
    const = dict(H=H, HV=HV, K=K, V=V, BK=BK, L2=l2, DT=DT)
    kp, ks, ko = (_kw(L, name, const) for name in (prep.__name__, "_fwd_state", "_fwd_out"))
    # One sequence whose state pass leaves SMs free runs in P parts of consecutive chunks (`n_parts`): each part's
    # prep on the current stream, its state pass on a high-priority side stream once that prep is done, its output
    # on the current stream once those states are written, so that the per-chunk kernels run beside the serial
    # state pass. The state is carried from part to part in fp32 (h0 / ht of the pass), as inside the pass, so the
    # results are the one pass's bit for bit. Otherwise the one part is the whole batch, on the current stream.
    n_fs = _cdiv(V, ks["BV"])
    P = n_parts(N, NC, N * HV * n_fs, dev)
    parts, hs, side, main = _walk(cu, P, h0, ht, (HV, K, V), dev, align=S)
    prep_done, state_done = [], []
    gprep = prep is _fwd_prep64 and prep_gluon.usable(k, v, Ai if grad else None, w, u, CONFIG["prep_gluon"], l2,
                                                      pflags.get("TW", 1))
    for pt in parts:
        if pt.c1 > pt.c0 and gprep:
            prep_gluon.run(k, v, g, beta, gc, rk, Ai, w, u, cinfo[2 * pt.c0:2 * pt.c1], TT,
                           _chunk_grid(pt.c1 - pt.c0, HV), grad, pflags["SPLIT"])
        elif pt.c1 > pt.c0:
            _run(prep, _chunk_grid(pt.c1 - pt.c0, HV), k, v, g, beta, gc, rk, Ai, w, u, cinfo[2 * pt.c0:2 * pt.c1], TT,
                 STORE_AI=grad, **kp, **pflags)
        prep_done.append(_recorded(main))
    for p, pt in enumerate(parts):
        with _after(side, prep_done[p]):
            _launch(_fwd_state, (n_fs, N * HV),
                k, w, u, gc, rk, hs[p] if hs[p] is not None else gc, hbuf, vnew,
                hs[p + 1] if hs[p + 1] is not None else gc, pt.cu, pt.coff if HS == 1 else pt.goff, TT,
                HAS_H0=hs[p] is not None, STORE_HT=hs[p + 1] is not None, HS=HS, **ks)
            state_done.append(_recorded(side))
    glu = out_gluon.usable(q, k, v, S, CONFIG["out_gluon"])
    for p, pt in enumerate(parts):
        with _after(main, state_done[p]):
            if pt.g1 > pt.g0 and _gluon_takes(glu, (pt.g1 - pt.g0) * HV, "out_gluon", dev):
                out_gluon.run(q, k, gc, rk, rq, hbuf, vnew, o, ginfo[4 * pt.g0:4 * pt.g1], scale, HS,
                              _chunk_grid(pt.g1 - pt.g0, HV), l2=l2)
            elif pt.g1 > pt.g0:
                _run(_fwd_out, _chunk_grid(pt.g1 - pt.g0, HV), q, k, gc, rk, rq, hbuf, vnew, o,
                     ginfo[4 * pt.g0:4 * pt.g1], scale, TT, S=S, HS=HS, **ko)
    return o, ht, (gc, rk, rq, Ai, w, hbuf, vnew)


def _bwd(q, k, v, beta, scale, saved, do, dht, need_dh0, cu, l2, gdt=torch.float32):
    """dg is stored in gdt (g's dtype) and dbeta in beta's by `_bwd_wy` itself, which rounds its fp32 values once
    either way: a conversion afterwards was one more kernel launch in every backward."""
    gc, rk, rq, Ai, w, hbuf, vnew = saved
    TT, H, K = q.shape
    HV, V = v.shape[1], v.shape[2]
    dev = q.device
    cinfo, NC, _, _ = _meta(cu, str(dev))
    N = len(cu) - 1
    BK = _cfg(K, V)[0]
    DT = _TL[q.dtype]
    L = launches(K, V, q.dtype == torch.float32, N * HV, dev)  # refuse_broken ran on these in _fwd
    const = dict(H=H, HV=HV, K=K, V=V, BK=BK, L2=l2, DT=DT)
    do = do.contiguous()
    dhbuf = _empty(*hbuf.shape, dtype=hbuf.dtype, device=dev)
    dvnew = _empty(TT, HV, V, dtype=q.dtype, device=dev)
    dh0 = _empty(N, HV, K, V, dtype=torch.float32, device=dev) if need_dh0 else None
    if dht is not None:
        dht = dht.float().contiguous()
    # One sequence whose backward state pass leaves SMs free runs in parts, as the forward (`_fwd`), walked from
    # the last part to the first: each part's _bwd_dlocal on the current stream, its state pass on the side
    # stream once that is done (the state gradient carried from part to part in fp32 through dht / dh0), its
    # _bwd_dqk and _bwd_wy on the current stream once its state gradients are written. Otherwise the one part
    # is the whole batch. (Several sequences in groups, each group's state pass beside another's per-chunk
    # kernels, were slower at every table shape: H100, session 13, Olmo-Hybrid 8x4096 fwd+bwd 5.701 -> 5.91 ms
    # with 2 or 4 groups, Qwen3-Next 5.513 -> 5.553 with 2.)
    n_bs = _cdiv(V, L["_bwd_state"][0])
    P = n_parts(N, NC, N * HV * n_bs, dev, backward=True)
    parts, dhs, side, main = _walk(cu, P, dht, dh0, (HV, K, V), dev, reverse=True)
    bstate, bs_const = bstate_kernel(K, n_bs * N * HV, dev)
    kdl, kbs, kdqk, kwy = (_kw(L, name, const) for name in ("_bwd_dlocal", "_bwd_state", "_bwd_dqk", "_bwd_wy"))
    dl_done, bs_done = [], []
    for pt in parts:
        if pt.c1 > pt.c0 and not bs_const.get("FUSE_DL"):
            _run(_bwd_dlocal, _chunk_grid(pt.c1 - pt.c0, HV), q, k, gc, do, dvnew, rk, cinfo[2 * pt.c0:2 * pt.c1], scale,
                 TT, **kdl)
        dl_done.append(_recorded(main))
    for i, pt in enumerate(parts):
        with _after(side, dl_done[i]):
            _launch(bstate, (n_bs, N * HV),
                q, k, w, gc, do, dhs[i] if dhs[i] is not None else gc, dhs[i + 1] if dhs[i + 1] is not None else gc,
                dhbuf, dvnew, rq, rk, pt.cu, pt.coff, scale, TT, HAS_DHT=dhs[i] is not None,
                STORE_DH0=dhs[i + 1] is not None, **bs_const, **kbs)
            bs_done.append(_recorded(side))
    # grouped value heads (G > 1): dq / dk added atomically in bf16 into zeroed [tokens, H, K] outputs
    # (group_atomic). H100, Qwen3-Next 8x4096 (session 6): fwd+bwd 6.624 -> 6.401 ms against per-value-head
    # stores and one elementwise add (0.38 ms); the per-chunk kernels take +0.05 ms each for the atomics.
    # (Session 4: fp32 atomics into a zeroed buffer and a conversion, 0.27 ms of elementwise kernels, were
    # slower than that add.)
    G = HV // H
    GA = G > 1 and bool(CONFIG["group_atomic"]) and _native_atomic_add(q.dtype, str(dev))
    if GA:
        dq = torch.zeros(TT, H, K, dtype=q.dtype, device=dev)
        dk = torch.zeros(TT, H, K, dtype=k.dtype, device=dev)
    else:
        dq = _empty(TT, HV, K, dtype=q.dtype, device=dev)
        dk = _empty(TT, HV, K, dtype=k.dtype, device=dev)
    dv = _empty(TT, HV, V, dtype=v.dtype, device=dev)
    dg = _empty(TT, HV, dtype=gdt, device=dev)
    db = _empty(TT, HV, dtype=beta.dtype, device=dev)
    dkp = _empty(TT, HV, K, dtype=torch.float32 if CONFIG["dkp_fp32"] else q.dtype, device=dev)
    dgp = _empty(TT, HV, dtype=torch.float32, device=dev)
    glu = dqk_gluon.usable(q, k, hbuf, dhbuf, vnew, do, CONFIG["dqk_gluon"], CONFIG["bchunk_norms"])
    gwy = wy_gluon.usable(k, v, Ai, hbuf, vnew, dvnew, CONFIG["wy_gluon"], CONFIG["bchunk_norms"])
    for i, (c0, c1, *_) in enumerate(parts):
        with _after(main, bs_done[i]):
            if c1 > c0:
                ci = cinfo[2 * c0:2 * c1]
                grid = _chunk_grid(c1 - c0, HV)
                hs, dhp = hbuf[c0:c1], dhbuf[c0:c1]  # this part's chunks' states and their gradients
                if _gluon_takes(glu, (c1 - c0) * HV, "dqk_gluon", dev):
                    dqk_gluon.run(q, k, gc, hs, dhp, vnew, do, dq, dkp, dgp, ci, scale, rq, rk, TT, grid, GA, l2)
                else:
                    _run(_bwd_dqk, grid, q, k, gc, hs, dhp, vnew, do, dq, dkp, dgp, ci, scale, rq, rk, TT, GA=GA, **kdqk,
                         **bchunk_flags())
                if _gluon_takes(gwy, (c1 - c0) * HV, "wy_gluon", dev):
                    wy_gluon.run(k, v, gc, beta, Ai, hs, vnew, dvnew, dkp, dgp, dk, dv, dg, db, ci, rk, TT, grid, GA, l2)
                else:
                    _run(_bwd_wy, grid, k, v, gc, beta, Ai, hs, vnew, dvnew, dkp, dgp, dk, dv, dg, db, ci, rk, TT, GA=GA,
                         TW=Ai.shape[-1] // BT, **kwy, **wy_flags(_on_nvidia(q), q.dtype == torch.float32))
    if G > 1 and not GA:
        dq, dk = (_sum_groups(x.view(TT, H, G, K)) for x in (dq, dk))
    return dq, dk, dv, dg, db, dh0


def _sum_groups(x):
    """[tokens, H, G, K] -> [tokens, H, K]: elementwise adds of the G slices (torch's reduction over the
    strided group axis ran at half the bandwidth: 0.58 ms for dq and dk at Qwen3-Next 8x4096 on the H100)."""
    out = x[:, :, 0] + x[:, :, 1]
    for j in range(2, x.shape[2]):
        out += x[:, :, j]
    return out


class ChunkGatedDeltaRuleFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, g, beta, scale, initial_state, output_final_state, cu, l2, grad=True):
        B, T = q.shape[:2]
        shp = (q.shape, k.shape, v.shape, g.dtype)
        q2 = q.reshape(B * T, *q.shape[2:]).contiguous()
        k2 = k.reshape(B * T, *k.shape[2:]).contiguous()
        v2 = v.reshape(B * T, *v.shape[2:]).contiguous()
        g2 = g.reshape(B * T, -1).contiguous()
        b2 = beta.reshape(B * T, -1).contiguous()
        h0 = initial_state.float().contiguous() if initial_state is not None else None
        o, ht, saved = _fwd(q2, k2, v2, g2, b2, scale, h0, output_final_state, cu, l2, grad)
        if grad:
            ctx.save_for_backward(q2, k2, v2, b2, *saved)
        ctx.meta = (shp, scale, cu, l2, initial_state is not None,
                    initial_state.dtype if initial_state is not None else None)
        return o.view(v.shape), ht

    @staticmethod
    def backward(ctx, do, dht):
        q2, k2, v2, b2, *saved = ctx.saved_tensors
        (qs, ks, vs, gdt), scale, cu, l2, has_h0, h0dt = ctx.meta
        TT = q2.shape[0]
        do2 = do.reshape(TT, *vs[2:])
        dq, dk, dv, dg, db, dh0 = _bwd(q2, k2, v2, b2, scale, tuple(saved), do2, dht, has_h0, cu, l2, gdt)
        # every gradient comes in its input's dtype from `_bwd` (dq / dk / dv / dbeta as the inputs, dg in gdt)
        return (dq.view(qs), dk.view(ks), dv.view(vs), dg.view(vs[:3]),
                db.view(vs[:3]), None, dh0.to(h0dt) if dh0 is not None else None, None, None, None, None)


_CU_SEEN: list = []  # (weak reference to a cu_seqlens tensor, its version, its values), newest last (`_cu_values`)


def _cu_values(cu_seqlens: torch.Tensor) -> tuple:
    """cu_seqlens' values on the host. Reading them from a GPU tensor waits for the GPU to get there, and the host
    then queues nothing ahead of it. A model passes the one tensor of its batch to every GDN layer, so the values are
    remembered for the last 8 tensors, each by object and version (an in-place change through torch moves the
    version, a write through `.data` does not; a tensor that is gone matches nothing): one wait a forward instead of
    one a layer. Inference-mode tensors keep no version and are read every time."""
    try:
        ver = cu_seqlens._version
    except RuntimeError:  # an inference tensor
        ver = None
    for ref, v, vals in _CU_SEEN if ver is not None else ():
        if ref() is cu_seqlens and v == ver:
            return vals
    vals = tuple(int(x) for x in cu_seqlens.tolist())
    if ver is not None:
        _CU_SEEN.append((weakref.ref(cu_seqlens), ver, vals))
        del _CU_SEEN[:-8]
    return vals


def _v_padded(V: int, device: torch.device) -> int:
    """The value dim the kernels run at: V, or on CUDA at least 64, the rest zero columns. On the H100 with Triton
    3.6 (session 16) value dims of 16 and 32 gave wrong outputs and states (relative error 0.7-1.3, fp16; the
    interpreter and fp32 were right) or illegal memory accesses (bf16, and the backward), at key dims 64, 96 and 128
    alike, while 48 and 64 were right: the prep on one 32-wide value block gave a wrong state (two 16-wide blocks a
    right one), and the output kernel was wrong even with a right state. Cause not established (compiler or
    kernel); the padding costs nothing at the dims real models use (128-256)."""
    return max(V, 64) if device.type == "cuda" else V


def chunk_gated_delta_rule(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    beta: torch.Tensor,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    cu_seqlens: torch.Tensor | None = None,
    use_qk_l2norm_in_kernel: bool = False,
    **_unused,
):
    """Chunked gated delta rule (Triton forward and backward).

    q, k [B, T, H, K]; v [B, T, HV, V]; g (log-space decay), beta [B, T, HV]; initial_state
    [N, HV, K, V] (fp32). With cu_seqlens (int, [N+1]) B must be 1 and sequences are packed along T.
    Returns (o [B, T, HV, V] in v.dtype, final_state [N, HV, K, V] fp32 or None).
    q, k and v must share a dtype (fp32, bf16 or fp16).
    """
    B, T, H, K = q.shape
    HV, V = v.shape[2], v.shape[3]
    if k.shape != q.shape or v.shape[:2] != (B, T) or g.shape != (B, T, HV) or beta.shape != (B, T, HV):
        raise ValueError("expected q,k [B,T,H,K], v [B,T,HV,V], g,beta [B,T,HV]")
    if HV % H:
        raise ValueError(f"value heads {HV} must be a multiple of q/k heads {H}")
    if not (q.dtype == k.dtype == v.dtype) or q.dtype not in _TL:
        raise ValueError(f"q, k, v must share a dtype among fp32/bf16/fp16, got {q.dtype}, {k.dtype}, {v.dtype}")
    if K > 256:
        raise ValueError("key head dim > 256 is not supported")
    if cu_seqlens is not None:
        if B != 1:
            raise ValueError("cu_seqlens needs B == 1 (sequences packed along T)")
        cu = _cu_values(cu_seqlens)
        if cu[0] != 0 or cu[-1] != T:
            raise ValueError("cu_seqlens must start at 0 and end at T")
    else:
        cu = tuple(range(0, B * T + 1, T)) if T else tuple([0] * (B + 1))
    N = len(cu) - 1
    if initial_state is not None and tuple(initial_state.shape) != (N, HV, K, V):
        raise ValueError(f"initial_state must be {(N, HV, K, V)}, got {tuple(initial_state.shape)}")
    scale = K**-0.5 if scale is None else float(scale)
    # without a backward to follow (inference, teacher scoring, evaluation) the forward skips what only the
    # backward reads
    grad = torch.is_grad_enabled() and any(
        x is not None and x.requires_grad for x in (q, k, v, g, beta, initial_state))
    Vp = _v_padded(V, q.device)
    if Vp != V:  # zero value columns: they leave every real column of o, the state and the gradients as they were
        v = torch.nn.functional.pad(v, (0, Vp - V))
        if initial_state is not None:
            initial_state = torch.nn.functional.pad(initial_state, (0, Vp - V))
    o, ht = ChunkGatedDeltaRuleFunction.apply(
        q, k, v, g, beta, scale, initial_state, bool(output_final_state), cu, bool(use_qk_l2norm_in_kernel), grad)
    if Vp != V:
        o, ht = o[..., :V].contiguous(), (ht[..., :V].contiguous() if ht is not None else None)
    return o, ht
