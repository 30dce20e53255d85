"""Session 18: one decode step (Qwen3-Next layer dims, batch 8, bf16, state in place) eager against the same step
captured in a CUDA graph and replayed: ms per step over 500 steps in a row (one sync at the end), three rounds."""
import time

import torch

from hybrid_posttrain.kernels.gdn import fused_recurrent_gated_delta_rule as step_fn


def main():
    B, H, HV, K, V = 8, 16, 32, 128, 128
    dev = "cuda"
    ins = [torch.randn(B, 1, H, K, device=dev, dtype=torch.bfloat16),
           torch.randn(B, 1, H, K, device=dev, dtype=torch.bfloat16),
           torch.randn(B, 1, HV, V, device=dev, dtype=torch.bfloat16),
           -torch.rand(B, 1, HV, device=dev), torch.rand(B, 1, HV, device=dev, dtype=torch.bfloat16)]
    state = torch.zeros(B, HV, K, V, device=dev)

    def step():
        return step_fn(*ins, initial_state=state, output_final_state=True, use_qk_l2norm_in_kernel=True,
                       inplace_final_state=True)

    with torch.no_grad():
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                step()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            step()
        for rnd in range(3):
            for name, f in (("eager", step), ("graph replay", graph.replay)):
                for _ in range(20):
                    f()
                torch.cuda.synchronize()
                t = time.perf_counter()
                for _ in range(500):
                    f()
                torch.cuda.synchronize()
                print(f"round {rnd} decode step {name}: {(time.perf_counter() - t) / 500 * 1e6:.1f} us a step",
                      flush=True)


if __name__ == "__main__":
    main()
