# ruff: noqa: B023, F821  (closures used within their loop iteration)
"""Session 18: the host cost of each of our kernel launches in one forward+backward call (Qwen3-Next and
Olmo-Hybrid 2x4096): the launches are captured from a real call, then each is repeated (median of 300) through our
_run / _launch and as kernel[grid](...) alone; then cProfile of the slowest launch; and the time outside _fwd /
_bwd (autograd.Function forward / backward wrappers and the public function)."""
import cProfile
import io
import os
import pstats
import statistics
import sys
import time

import torch

sys.path.insert(0, os.getcwd())
from benchmarks.gdn import SHAPES, fb_fn, make  # noqa: E402
from hybrid_posttrain.kernels.gdn import chunk as hc  # noqa: E402
from hybrid_posttrain.kernels.gdn import chunk_gated_delta_rule  # noqa: E402


def med(f, n=300):
    for _ in range(10):
        f()
    torch.cuda.synchronize()
    ts = []
    for _ in range(n):
        t = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t)
        if len(ts) % 100 == 0:
            torch.cuda.synchronize()
    torch.cuda.synchronize()
    return statistics.median(ts) * 1e6


def main():
    for sname in ("qwen", "olmo"):
        label, H, HV, K, V = SHAPES[sname]
        xs, do = make(2, 4096, H, HV, K, V)
        f = fb_fn(chunk_gated_delta_rule, xs, do)
        f()
        cap = []
        o_run, o_launch = hc._run, hc._launch

        def run_w(kernel, grid, *a, **kw):
            cap.append(("_run", kernel, grid, a, kw))
            return o_run(kernel, grid, *a, **kw)

        def launch_w(kernel, grid, *a, **kw):
            cap.append(("_launch", kernel, grid, a, kw))
            return o_launch(kernel, grid, *a, **kw)

        hc._run, hc._launch = run_w, launch_w
        try:
            f()
        finally:
            hc._run, hc._launch = o_run, o_launch
        torch.cuda.synchronize()
        worst = None
        for via, kernel, grid, a, kw in cap:
            t_via = med(lambda: (o_run if via == "_run" else o_launch)(kernel, grid, *a, **kw))
            kw2 = dict(kw, num_stages=hc._FITTED.get((kernel.__name__, frozenset(kw.items()), str(a[0].device)),
                                                     kw.get("num_stages", 1))) if via == "_run" else kw
            t_direct = med(lambda: kernel[grid](*a, **kw2))
            print(f"{label} 2x4096 launch {kernel.__name__} ({len(a)} args, {len(kw)} keywords): via {via} "
                  f"{t_via:.1f} us, kernel[grid] alone {t_direct:.1f} us", flush=True)
            if worst is None or t_direct > worst[0]:
                worst = (t_direct, kernel, grid, a, kw2)
        _, kernel, grid, a, kw2 = worst
        pr = cProfile.Profile()
        pr.enable()
        for _ in range(300):
            kernel[grid](*a, **kw2)
        pr.disable()
        torch.cuda.synchronize()
        buf = io.StringIO()
        pstats.Stats(pr, stream=buf).sort_stats("tottime").print_stats(30)
        print(f"cProfile {kernel.__name__} x300:\n{buf.getvalue()}", flush=True)
        # outside _fwd / _bwd
        acc = {}
        Fn = hc.ChunkGatedDeltaRuleFunction
        o_f, o_b, o_fwd, o_bwd = Fn.forward, Fn.backward, hc._fwd, hc._bwd

        def timed(nm, fn):
            def w(*a, **kw):
                t = time.perf_counter()
                try:
                    return fn(*a, **kw)
                finally:
                    acc[nm] = acc.get(nm, 0.0) + time.perf_counter() - t
            return w

        Fn.forward, Fn.backward = staticmethod(timed("Fn.forward", o_f)), staticmethod(timed("Fn.backward", o_b))
        hc._fwd, hc._bwd = timed("_fwd", o_fwd), timed("_bwd", o_bwd)
        try:
            f()
            torch.cuda.synchronize()
            acc.clear()
            t = time.perf_counter()
            for _ in range(50):
                f()
            acc["call"] = time.perf_counter() - t
            torch.cuda.synchronize()
        finally:
            Fn.forward, Fn.backward, hc._fwd, hc._bwd = staticmethod(o_f), staticmethod(o_b), o_fwd, o_bwd
        print(f"{label} 2x4096 fwd+bwd host ms a call: " + ", ".join(f"{k}={v / 50 * 1e3:.3f}" for k, v in acc.items()))
        del xs, do, f, cap


if __name__ == "__main__":
    main()
