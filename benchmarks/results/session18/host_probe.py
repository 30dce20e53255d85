"""Session 18: host cost of the primitives a GDN call is made of, on the device's CPU (perf_counter, median of
2000 calls; GPU work is tiny): an empty Triton kernel launch with as many pointer / int args and constexpr keywords
as ours, torch.empty, an autograd.Function round trip, Triton's knobs reads."""
import statistics
import sys
import time

import torch
import triton
import triton.language as tl


@triton.jit
def _k12(a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, n, H: tl.constexpr, HV: tl.constexpr, K: tl.constexpr,
         V: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, L2: tl.constexpr, DT: tl.constexpr, X: tl.constexpr):
    pass


@triton.jit
def _k1(a0):
    pass


def med(f, n=2000):
    for _ in range(50):
        f()
    ts = []
    for _ in range(n):
        t = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t)
    torch.cuda.synchronize()
    return statistics.median(ts) * 1e6


class Ident(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g):
        return g


def main():
    x = torch.zeros(1024, device="cuda")
    ps = [torch.zeros(64, device="cuda", dtype=torch.bfloat16) for _ in range(12)]
    kw = dict(H=30, HV=30, K=96, V=192, BK=128, BV=64, L2=True, DT=tl.bfloat16, X=1, num_warps=4, num_stages=3)
    print(f"python {sys.version.split()[0]}, torch {torch.__version__}, triton {triton.__version__}")
    print(f"empty triton launch, 1 arg: {med(lambda: _k1[(1,)](x)):.1f} us")
    print(f"empty triton launch, 12 ptrs + int + 9 constexprs: {med(lambda: _k12[(30, 64)](*ps, 7, **kw)):.1f} us")
    print(f"  ... with maxnreg=168: {med(lambda: _k12[(30, 64)](*ps, 7, **kw, maxnreg=168)):.1f} us")
    print(f"torch.empty 8192x30x192 bf16: {med(lambda: torch.empty(8192, 30, 192, dtype=torch.bfloat16, device='cuda')):.1f} us")
    print(f"torch.zeros 8192x30x96 bf16: {med(lambda: torch.zeros(8192, 30, 96, dtype=torch.bfloat16, device='cuda')):.1f} us")
    xr = torch.zeros(8192, 30, 192, device="cuda", requires_grad=True)
    go = torch.ones_like(xr)
    print(f"autograd.Function apply + autograd.grad (identity): {med(lambda: torch.autograd.grad(Ident.apply(xr), xr, go)):.1f} us")
    from triton import knobs
    print(f"knobs.runtime.debug read: {med(lambda: knobs.runtime.debug):.2f} us")
    print(f"torch.cuda.current_stream: {med(lambda: torch.cuda.current_stream()):.2f} us")
    print(f"torch.cuda.Event + record: {med(lambda: torch.cuda.Event().record()):.2f} us")


if __name__ == "__main__":
    main()
