"""Session 16: the decode kernel (not padded) at small value dims in bf16 / fp16 against the fp64 recurrence."""
import sys

import torch

sys.path.insert(0, "tests/kernels")
import test_gdn as tg

from hybrid_posttrain.kernels import gdn

for dims in ((1, 2, 32, 32), (1, 2, 16, 16), (2, 2, 64, 32), (1, 1, 96, 32), (2, 4, 128, 128)):
    for dt in (torch.bfloat16, torch.float16):
        H, HV, K, V = dims
        xs = tg.make_inputs(2, 6, H, HV, K, V, dt, seed=3)
        q, k, v, g, beta, h0 = xs
        state = h0.clone()
        outs = []
        for t in range(6):
            sl = slice(t, t + 1)
            o, state = gdn.fused_recurrent_gated_delta_rule(q[:, sl], k[:, sl], v[:, sl], g[:, sl], beta[:, sl],
                                                            initial_state=state, output_final_state=True,
                                                            use_qk_l2norm_in_kernel=True)
            outs.append(o)
        ref = tg.reference(xs, grads=False)
        eo, eh = tg.rel(torch.cat(outs, 1), ref["o"]), tg.rel(state, ref["ht"])
        print(f"{'BAD' if max(eo, eh) > 1e-2 else 'ok '} decode {dims} {dt}: o {eo:.1e} ht {eh:.1e}", flush=True)
