"""Session 22, call 7 (main after t_f16 was dropped): relative errors against the fp64 recurrence in bf16 on nearly
parallel keys with beta near 2 (the test file's `_nearly_parallel`, T = 500, both GPU head shapes, L2-normalised q / k):
ours as on main (T in bf16), with T and its rounding's remainder (bwd_split_t), and flash-linear-attention (its Hopper
guard lifted, as in benchmarks/gdn.py); and random inputs the same way."""
import sys

import torch

sys.path.insert(0, "tests/kernels")
sys.path.insert(0, "benchmarks")
from gdn import load_fla  # noqa: E402
from test_gdn import _nearly_parallel, make_inputs, reference, rel, run  # noqa: E402

from hybrid_posttrain.kernels.gdn import chunk  # noqa: E402

fla, note = load_fla()
print(note)
base = dict(chunk.CONFIG)
T = 500
for H, HV, K, V in [(2, 2, 96, 192), (2, 4, 128, 128)]:
    for case in ("nearly parallel", "random"):
        xs = make_inputs(1, T, H, HV, K, V, torch.float32, seed=7)
        if case == "nearly parallel":
            xs = _nearly_parallel(xs, T, H, HV, K)
        xs = [x.bfloat16() if i in (0, 1, 2, 4) else x for i, x in enumerate(xs)]
        ref = reference(xs)
        rows = [("hpt", {}), ("hpt bwd_split_t", {"bwd_split_t": True})]
        for name, over in rows:
            chunk.CONFIG.clear()
            chunk.CONFIG.update(base, **over)
            got = run(chunk.chunk_gated_delta_rule, xs)
            errs = {n: rel(got[n], ref[n]) for n in ref if ref[n] is not None}
            print(f"{(H, HV, K, V)} {case:15s} {name:16s} max {max(errs.values()):.1e} :: "
                  + ", ".join(f"{n}={e:.1e}" for n, e in errs.items()), flush=True)
        chunk.CONFIG.clear()
        chunk.CONFIG.update(base)
        if fla is not None:
            got = run(fla, xs)
            errs = {n: rel(got[n], ref[n]) for n in ref if ref[n] is not None}
            print(f"{(H, HV, K, V)} {case:15s} {'fla':16s} max {max(errs.values()):.1e} :: "
                  + ", ".join(f"{n}={e:.1e}" for n, e in errs.items()), flush=True)
