"""Every launch-setting variant's outputs and gradients against the default config's, same inputs (bf16)."""
import json, sys
import torch
sys.path.insert(0, "benchmarks")
from benchmarks.gdn import SHAPES, make, outputs, rel
from hybrid_posttrain.kernels.gdn import chunk as hc
from hybrid_posttrain.kernels.gdn import chunk_gated_delta_rule as f

configs = json.loads(sys.argv[1])
bt = sys.argv[2] if len(sys.argv) > 2 else "2x4096"
base = dict(hc.CONFIG)
for s in ("olmo", "qwen"):
    label, H, HV, K, V = SHAPES[s]
    B, T = (int(x) for x in bt.split("x"))
    xs, do = make(B, T, H, HV, K, V)
    ref = outputs(f, xs, do)
    with torch.no_grad():
        ref_nf = f(*xs, use_qk_l2norm_in_kernel=True)[0]
    for c in configs:
        hc.CONFIG.clear(); hc.CONFIG.update(base); hc.CONFIG.update(c)
        try:
            got = outputs(f, xs, do)
            with torch.no_grad():
                nf = f(*xs, use_qk_l2norm_in_kernel=True)[0]
            e = {n: rel(a, b) for n, a, b in zip(["o", "dq", "dk", "dv", "dg", "dbeta"], got, ref)}
            e["o_nograd"] = rel(nf, ref_nf)
            worst = max(e.values())
            print(f"{label} {bt} {json.dumps(c)}: {'OK ' if worst < 1e-2 else 'BAD'} max {worst:.1e} :: "
                  + ", ".join(f"{n}={v:.1e}" for n, v in e.items()), flush=True)
        except Exception as ex:
            print(f"{label} {bt} {json.dumps(c)}: ERROR {type(ex).__name__}: {str(ex)[:120]}", flush=True)
            raise SystemExit(1)
    hc.CONFIG.clear(); hc.CONFIG.update(base)
