"""Session 18: host time of one decode step (fused_recurrent_gated_delta_rule, one token, state updated in place),
Qwen3-Next layer dims, batch 8, bf16: this session's launch code against the previous one (the bounds made by an
arange and a product every step, triton.cdiv / next_power_of_2), alternating, in one process; and the GPU busy time."""
import os
import statistics
import sys
import time

import torch
import triton

sys.path.insert(0, os.getcwd())
from benchmarks.gdn import busy_ms  # noqa: E402
from hybrid_posttrain.kernels.gdn import fused_recurrent as fr  # noqa: E402


def med(f, n=500):
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


def main():
    B, H, HV, K, V = 8, 16, 32, 128, 128
    dev = "cuda"
    q = torch.randn(B, 1, H, K, device=dev, dtype=torch.bfloat16)
    k = torch.randn(B, 1, H, K, device=dev, dtype=torch.bfloat16)
    v = torch.randn(B, 1, HV, V, device=dev, dtype=torch.bfloat16)
    g = -torch.rand(B, 1, HV, device=dev)
    beta = torch.rand(B, 1, HV, device=dev, dtype=torch.bfloat16)
    state = torch.zeros(B, HV, K, V, device=dev)

    def step():
        with torch.no_grad():
            fr.fused_recurrent_gated_delta_rule(q, k, v, g, beta, initial_state=state, output_final_state=True,
                                                use_qk_l2norm_in_kernel=True, inplace_final_state=True)

    new = (fr._even_cu, fr._np2, fr._cdiv)
    old = (lambda B, T, d: torch.arange(0, B + 1, dtype=torch.int32, device=d) * T, triton.next_power_of_2,
           triton.cdiv)
    for rnd in range(3):
        for name, fns in (("previous", old), ("this session", new)):
            fr._even_cu, fr._np2, fr._cdiv = fns
            print(f"round {rnd} decode step, {name}: host {med(step):.1f} us, GPU busy {busy_ms(step) * 1e3:.1f} us",
                  flush=True)
    fr._even_cu, fr._np2, fr._cdiv = new


if __name__ == "__main__":
    main()
