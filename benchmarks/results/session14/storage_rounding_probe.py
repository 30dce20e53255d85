"""Which stored tensor's bf16 rounding costs the gradients their accuracy on nearly parallel keys (session 14, CPU).

Run on the fp32 path (exact products) with bf16-rounded inputs. `storage_rounding_hook.patch` (made against
chunk.py as of 5d1e9e5; it applies to later versions too) rounds the named buffers to bf16 where the driver
stores them (HPT_RND=u,w,...). Output: storage_rounding_probe.txt.

    git apply benchmarks/results/session14/storage_rounding_hook.patch
    TRITON_INTERPRET=1 PYTHONPATH=$PWD python benchmarks/results/session14/storage_rounding_probe.py
"""
import os
import sys

import torch

sys.path.insert(0, "tests/kernels")
from test_gdn import _nearly_parallel, make_inputs, reference, rel, run

from hybrid_posttrain.kernels.gdn import chunk

H, HV, K, V = (1, 2, 64, 96)
T = 130
xs = _nearly_parallel(make_inputs(1, T, H, HV, K, V, torch.float32, seed=7), T, H, HV, K)
xs = [x.bfloat16().float() if i in (0, 1, 2, 4) else x for i, x in enumerate(xs)]  # bf16-rounded inputs, fp32 path
ref = reference(xs)
pts = ["u", "w", "T", "h", "delta", "dh", "dd", "dkp"]
for on in [[]] + [[p] for p in pts] + [pts, [p for p in pts if p != "T"]]:
    os.environ["HPT_RND"] = ",".join(on)
    got = run(chunk.chunk_gated_delta_rule, xs)
    e = {n: rel(got[n], ref[n]) for n in ref if ref[n] is not None}
    print(f"{','.join(on) or 'nothing':28s} max {max(e.values()):.1e}", {n: f"{v:.1e}" for n, v in e.items()}, flush=True)
