"""Session 20: host time of a call with `kernels/_launch.py`'s direct launches against Triton's kernel[grid](...),
alternating in one process (rounds), since the device machine's CPU moves host numbers 30-50% between processes:
the GDN forward and forward+backward at 2x4096 (gdn.py's host_ms: the Python call without a sync after it), and one
decode step (fused_recurrent_gated_delta_rule, Qwen3-Next dims, batch 8, state in place), median of 500 steps."""
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.getcwd())
from benchmarks.gdn import SHAPES, busy_ms, fb_fn, fwd_fn, host_ms, make  # noqa: E402
from hybrid_posttrain.kernels import _launch  # noqa: E402
from hybrid_posttrain.kernels.gdn import chunk_gated_delta_rule  # noqa: E402
from hybrid_posttrain.kernels.gdn import fused_recurrent as fr  # noqa: E402

MODES = (("direct", True), ("Triton's", False))


def step_us(f, n=500):
    for _ in range(20):
        f()
    torch.cuda.synchronize()
    ts = []
    for i in range(n):
        t = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t)
        if i % 100 == 99:
            torch.cuda.synchronize()
    torch.cuda.synchronize()
    return statistics.median(ts) * 1e6


def main(rounds=4):
    for sname in ("olmo", "qwen"):
        label, H, HV, K, V = SHAPES[sname]
        xs, do = make(2, 4096, H, HV, K, V)
        res = {}
        for _ in range(rounds):
            for mode, on in MODES:
                _launch.CONFIG["direct"] = on
                for pas, f in (("fwd", fwd_fn(chunk_gated_delta_rule, xs)),
                               ("fwd+bwd", fb_fn(chunk_gated_delta_rule, xs, do))):
                    res.setdefault((pas, mode), []).append(host_ms(f, n=50))
        for mode, on in MODES:
            _launch.CONFIG["direct"] = on
            res[("fwd+bwd busy", mode)] = [busy_ms(fb_fn(chunk_gated_delta_rule, xs, do))]
        _launch.CONFIG["direct"] = True
        for (pas, mode), v in res.items():
            print(f"{label} 2x4096 {pas} launch {mode}: ms a call, rounds " + " / ".join(f"{x:.3f}" for x in v),
                  flush=True)
        del xs, do
        torch.cuda.empty_cache()
    B, H, HV, K, V = 8, 16, 32, 128, 128
    q, k = (torch.randn(B, 1, H, K, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    v = torch.randn(B, 1, HV, V, device="cuda", dtype=torch.bfloat16)
    g = -torch.rand(B, 1, HV, device="cuda")
    beta = torch.rand(B, 1, HV, device="cuda", dtype=torch.bfloat16)
    state = torch.zeros(B, HV, K, V, device="cuda")

    def step():
        with torch.no_grad():
            fr.fused_recurrent_gated_delta_rule(q, k, v, g, beta, initial_state=state, output_final_state=True,
                                                use_qk_l2norm_in_kernel=True, inplace_final_state=True)

    res = {}
    for _ in range(rounds):
        for mode, on in MODES:
            _launch.CONFIG["direct"] = on
            res.setdefault(mode, []).append(step_us(step))
    _launch.CONFIG["direct"] = True
    for mode, us in res.items():
        print(f"decode step Qwen3-Next dims, batch 8, launch {mode}: host us a step, rounds "
              + " / ".join(f"{x:.1f}" for x in us), flush=True)
    print(f"decode step GPU busy us: {busy_ms(step, iters=50) * 1e3:.1f}")


if __name__ == "__main__":
    main()
