"""Session 16: map which (K, V) and settings give wrong outputs on the H100 (no grads; grads with --grads)."""
import json
import sys

import torch

sys.path.insert(0, "tests/kernels")
import test_gdn as tg

from hybrid_posttrain.kernels.gdn import chunk

base = dict(chunk.CONFIG)
grads = "--grads" in sys.argv


def case(label, over, dtype, dims, T=130, B=1):
    chunk.CONFIG.clear()
    chunk.CONFIG.update(base)
    chunk.CONFIG.update(over)
    H, HV, K, V = dims
    xs = tg.make_inputs(B, T, H, HV, K, V, torch.float32)
    xs = [x.to(dtype) if i in (0, 1, 2, 4) else x for i, x in enumerate(xs)]
    got = tg.run(tg.chunk_fn("hpt"), xs, grads=grads)
    ref = tg.reference(xs, grads=grads)
    errs = {n: float(f"{tg.rel(got[n], ref[n]):.1e}") for n in ref if ref[n] is not None}
    L = chunk.launches(K, V, False, B * HV, "cuda")
    bad = max(errs.values()) > 1e-2
    print(f"{'BAD ' if bad else 'ok  '}{label:22s} {str(dtype)[6:]:8s} {dims} B{B} T{T} "
          f"prep64={L['_fwd_prep64'][0]} state={L['_fwd_state'][:3]} out={L['_fwd_out'][0]}: {errs}", flush=True)


if __name__ == "__main__":
    cases = json.loads(sys.argv[1])
    for label, over, dt, dims in cases:
        case(label, over, getattr(torch, dt), tuple(dims))
