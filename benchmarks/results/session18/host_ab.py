"""Session 18: host ms a call (gdn.py's host_ms: the Python call without a sync after it) of this session's chunk.py
against session 17's (chunk_s17.py, loaded as another module), alternating in one process, three rounds, at 2x4096:
the end-to-end host numbers of separate runs on the device machine moved by 30-50% from run to run."""
import os
import sys

import torch

sys.path.insert(0, os.getcwd())
from benchmarks.gdn import SHAPES, fb_fn, fwd_fn, host_ms, make  # noqa: E402
from benchmarks.probe_step import swap  # noqa: E402
from hybrid_posttrain.kernels.gdn import chunk_gated_delta_rule  # noqa: E402


def main():
    swap("gdn_base_chunk", "benchmarks/results/session18/chunk_s17.py")
    impls = [("session 17", sys.modules["gdn_base_chunk"].chunk_gated_delta_rule), ("this session", chunk_gated_delta_rule)]
    for sname in ("olmo", "qwen"):
        label, H, HV, K, V = SHAPES[sname]
        xs, do = make(2, 4096, H, HV, K, V)
        res = {}
        for _ in range(3):
            for name, fn in impls:
                for pas, f in (("fwd", fwd_fn(fn, xs)), ("fwd+bwd", fb_fn(fn, xs, do))):
                    res.setdefault((name, pas), []).append(host_ms(f, n=50))
        for (name, pas), v in res.items():
            print(f"{label} 2x4096 {pas} {name}: host ms a call, rounds " + " / ".join(f"{x:.3f}" for x in v), flush=True)
        del xs, do
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
