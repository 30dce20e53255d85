"""Session 22, calls 6 and 7: relative errors against the fp64 recurrence in bf16 on nearly parallel keys with beta near
2 (the test file's `_nearly_parallel` on `make_inputs`, T = 500, both GPU head shapes, L2-normalised q / k), and on random
inputs the same way, for our kernel in the forms the argument names and for flash-linear-attention where it imports (its
Hopper guard lifted, as in benchmarks/gdn.py).

    python hard.py t_f16   # call 6, with t_f16.patch applied: T in fp16 (the patch's default), in bf16, and bwd_split_t
    python hard.py main    # call 7, main: T in bf16 (main's default) and bwd_split_t

(`benchmarks/gdn.py --hard` is the kept form: the same table on its own inputs.)"""
import sys

import torch

sys.path.insert(0, "tests/kernels")
sys.path.insert(0, "benchmarks")
from gdn import load_fla  # noqa: E402
from test_gdn import _nearly_parallel, make_inputs, reference, rel, run  # noqa: E402

from hybrid_posttrain.kernels.gdn import chunk  # noqa: E402

FORMS = {"t_f16": [("hpt t_f16", {}), ("hpt bf16 T", {"t_f16": False}), ("hpt bwd_split_t", {"bwd_split_t": True})],
         "main": [("hpt", {}), ("hpt bwd_split_t", {"bwd_split_t": True})]}
if len(sys.argv) != 2 or sys.argv[1] not in FORMS:
    print(f"error: hard.py: expected one argument, t_f16 or main (got {sys.argv[1:]})", file=sys.stderr)
    sys.exit(2)
ROWS = FORMS[sys.argv[1]]
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
        for name, over in ROWS:
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
