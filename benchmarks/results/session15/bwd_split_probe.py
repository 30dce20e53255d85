# Session 15, call 3: largest error to the fp64 recurrence of the bf16 path with bwd_split_t off / on (random and
# nearly-parallel-keys inputs, both head shapes, T = 500). Run on the GPU from the repository root.
import torch, sys
sys.path.insert(0, "tests/kernels")
from hybrid_posttrain.kernels.gdn import chunk
from test_gdn import make_inputs, run, rel, reference
torch.manual_seed(0)
for dims in [(2, 2, 96, 192), (2, 4, 128, 128)]:
    H, HV, K, V = dims
    T = 500
    for case in ("random", "parallel", "parallel-slowdecay"):
        xs = make_inputs(1, T, H, HV, K, V, torch.float32, seed=7)
        if case.startswith("parallel"):
            gen = torch.Generator(device="cpu").manual_seed(8)
            base = torch.randn(1, 1, H, K, generator=gen)
            xs[1] = (base + 0.05 * torch.randn(1, T, H, K, generator=gen)).to(xs[1])
            xs[4] = (1.9 + 0.1 * torch.rand(1, T, HV, generator=gen)).to(xs[4])
            xs[3] = torch.full_like(xs[3], -0.01 if case == "parallel" else -0.001)
        xb = [x.to(torch.bfloat16) if i in (0, 1, 2, 4) else x for i, x in enumerate(xs)]
        ref = reference(xb)
        for f in (False, True):
            chunk.CONFIG["bwd_split_t"] = f
            got = run(chunk.chunk_gated_delta_rule, xb)
            e = {n: rel(got[n], ref[n]) for n in ref if ref[n] is not None}
            print(dims, case, "split" if f else "one-bf16", f"max {max(e.values()):.2e}", {n: f"{v:.1e}" for n, v in e.items()}, flush=True)
