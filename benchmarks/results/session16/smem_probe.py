"""Session 16: which launch setting gives wrong outputs when _max_smem is patched to Ada's 99 KB on the H100."""
import sys

import torch

sys.path.insert(0, "tests/kernels")
import test_gdn as tg

from hybrid_posttrain.kernels.gdn import chunk

H100, ADA = 232448, 101376
base = dict(chunk.CONFIG)


def case(label, smem, over, dtype, dims=(1, 1, 96, 32), T=130, grads=False):
    chunk.CONFIG.clear()
    chunk.CONFIG.update(base)
    chunk.CONFIG.update(over)
    chunk._max_smem = lambda device, smem=smem: smem
    H, HV, K, V = dims
    xs = tg.make_inputs(1, T, H, HV, K, V, torch.float32)
    xs = [x.to(dtype) if x.dtype == torch.float32 and i in (0, 1, 2, 4) else x for i, x in enumerate(xs)]
    L = chunk.launches(K, V, False, HV, "cuda")
    got = tg.run(tg.chunk_fn("hpt"), xs, grads=grads)
    ref = tg.reference(xs, grads=grads)
    errs = {n: round(tg.rel(got[n], ref[n]), 5) for n in ref if ref[n] is not None}
    print(f"{label:40s} {str(dtype)[6:]:9s} {dims} T={T} fwd_state={L['_fwd_state']} out={L['_fwd_out']} "
          f"S={chunk.out_chunks(False, 128, 'cuda')}: {errs}", flush=True)


for dt in (torch.float16, torch.bfloat16):
    case("ada default", ADA, {}, dt)
    case("h100 default", H100, {}, dt)
    case("h100 out_chunks 1", H100, {"out_chunks": 1}, dt)
    case("ada state_bv_min 32", ADA, {"state_bv_min": 32}, dt)
    case("ada state_stages 3", ADA, {"state_stages": 3}, dt)
    case("h100 state_stages_few 2", H100, {"state_stages_few": 2}, dt)
    case("h100 few 2, bv_min 16->", H100, {"state_stages_few": 2, "state_bv_min": 16}, dt)
    case("ada default V64", ADA, {}, dt, dims=(1, 1, 96, 64))
    case("ada default Qwen-like", ADA, {}, dt, dims=(1, 2, 128, 128))
    case("ada default grads", ADA, {}, dt, grads=True)
