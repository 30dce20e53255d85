"""Training-step benchmark of a hybrid student on one GPU: the transformers baseline against our fast path.

    python benchmarks/train_step.py                       # `make bench-step`: the issue's 1.33B model
    python benchmarks/train_step.py --set num_hidden_layers=4 --batch 1 --seq 1024 --steps 6

The model is the `olmo-hybrid-7b` preset reshaped to the Olmo-Hybrid 1.33B student (hidden 2048, 16
layers in the 3 GDN : 1 attention pattern, 16 heads, GDN key/value head dims 96/192 as OlmoHybridConfig
derives them for 16 heads, intermediate 5632, vocabulary 100352); `--set key=value` changes any config
field. Weights are bf16 (the precision policy keeps A_log, dt_bias and the GDN norms fp32), the
optimizer is fused AdamW, the batch is `--batch` x `--seq` tokens of learnable synthetic text (random
blocks repeated, so the loss falls).

Configurations, each run in this process one after the other from the same initial weights and data:
* ``baseline``: transformers' own model code (flash-linear-attention for the GDN recurrence when it is
  installed, else transformers' torch fallback), full logits + cross-entropy, no checkpointing.
* ``ours``: `models/fastpath.py:apply_fast_path` (our GDN kernels, fused boundary-aware conv, fused
  norms, SwiGLU with recomputed product, Liger fused linear + CE), checkpoint policy `--checkpoint`.
* ``--variants ours:mlp,...``: extra rows of ours with other checkpoint policies.

Each configuration runs `--steps` optimizer steps (the first `--warmup` untimed); we report the median
ms/step (CUDA events), tokens/s, MFU with 6·N·tokens and with attention + GDN FLOPs added, peak memory,
the backend of every fused part, and the per-step loss and gradient norm of the two paths side by side
(bf16 tolerance). Then the long-context check: one `--long`-token sequence trains (forward + backward +
step) with ours, peak memory reported. Results go to stdout and, with `--out DIR`, to DIR/train_step.json.
Needs no TRL: it imports only `hybrid_posttrain.models` and `hybrid_posttrain.kernels`.
"""

from __future__ import annotations

import argparse
import ast
import gc
import importlib
import importlib.util
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MODEL_1B3 = dict(hidden_size=2048, num_hidden_layers=16, num_attention_heads=16, num_key_value_heads=16,
                 intermediate_size=5632, vocab_size=100352, linear_num_key_heads=16, linear_num_value_heads=16,
                 linear_key_head_dim=96, linear_value_head_dim=192, max_position_embeddings=65536)
# --smoke: the same layer pattern, tiny (CPU plumbing checks; benchmarks/probe_step.py uses it too)
SMOKE_MODEL = dict(hidden_size=64, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=4,
                   intermediate_size=128, vocab_size=512, linear_num_key_heads=4, linear_num_value_heads=4,
                   linear_key_head_dim=16, linear_value_head_dim=32, pad_token_id=0, bos_token_id=1, eos_token_id=2)
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}


def parse_value(v: str):
    try:
        return ast.literal_eval(v)
    except (ValueError, SyntaxError):
        return {"true": True, "false": False, "null": None}.get(v.lower(), v)


def fail(msg: str):
    """A user error of a benchmark script: one line on stderr, exit status 2."""
    print(msg, file=sys.stderr)
    raise SystemExit(2)


def run_script(main):
    """A benchmark script's entry point: main()'s return code, except that a kernel knob that cannot be used
    (KernelEnvError: a bad HPT_GDN_CONFIG / HPT_CONV_CONFIG read at the kernels' import, or launch settings the
    GDN driver refuses) is one line and exit status 2, not a traceback."""
    from hybrid_posttrain.kernels._env import KernelEnvError

    try:
        rc = main()
    except KernelEnvError as e:
        fail(f"error: {e}")
    sys.exit(rc or 0)


def parse_sets(items: list[str]) -> dict:
    out = {}
    for item in items:
        if "=" not in item:
            fail(f"--set {item!r}: expected key=value")
        k, v = item.split("=", 1)
        out[k.strip()] = parse_value(v.strip())
    return out


def versions() -> dict[str, str]:
    vs = {"python": platform.python_version(), "torch": torch.__version__}
    for name, mod in [("triton", "triton"), ("transformers", "transformers"), ("liger-kernel", "liger_kernel"),
                      ("flash-linear-attention", "fla")]:
        try:
            from importlib.metadata import version

            vs[name] = version(name if name != "liger-kernel" else "liger_kernel")
        except Exception:
            vs[name] = "not installed" if importlib.util.find_spec(mod) is None else "?"
    vs["cuda"] = torch.version.cuda or "-"
    return vs


def device_name() -> str:
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"


def peak_tflops(name: str, override: float | None) -> float:
    if override:
        return override
    for k, v in PEAK_TFLOPS.items():
        if k in name:
            return v
    return 989.0


# ---------------------------------------------------------------- FLOPs

def flop_counts(cfg, batch: int, seq: int, n_params: int) -> dict[str, float]:
    """Per optimizer step: 6N·tokens, + causal attention (6·T²·d per layer per sequence, fwd+bwd), + GDN chunk
    form (per token and value head, chunk C=64: fwd 2C(3K+2V) + 6KV, backward twice the forward)."""
    tokens = batch * seq
    types = list(cfg.layer_types)
    n_attn = types.count("full_attention")
    n_gdn = types.count("linear_attention")
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    d_attn = cfg.num_attention_heads * head_dim
    attn = 6.0 * seq * seq * d_attn * n_attn * batch
    C, K, V, HV = 64, cfg.linear_key_head_dim, cfg.linear_value_head_dim, cfg.linear_num_value_heads
    gdn = 3.0 * (2 * C * (3 * K + 2 * V) + 6 * K * V) * HV * n_gdn * tokens
    six_n = 6.0 * n_params * tokens
    return {"6N": six_n, "attn": attn, "gdn": gdn, "total": six_n + attn + gdn}


# ---------------------------------------------------------------- data

def make_batch(step: int, batch: int, seq: int, vocab: int, device) -> torch.Tensor:
    """Random blocks of 256 tokens, each repeated to fill the sequence: learnable by copying."""
    g = torch.Generator(device="cpu").manual_seed(1000 + step)
    block = 256 if seq >= 512 else max(seq // 2, 1)
    reps = math.ceil(seq / block)
    base = torch.randint(6, vocab, (batch, block), generator=g)
    return base.repeat(1, reps)[:, :seq].contiguous().to(device)


# ---------------------------------------------------------------- backends

def transformers_gdn_backend() -> str:
    """What transformers' own OlmoHybrid code runs for the GDN recurrence and conv (fla / torch fallback)."""
    mod = importlib.import_module("transformers.models.olmo_hybrid.modeling_olmo_hybrid")
    out = []
    for attr in ("torch_chunk_gated_delta_rule", "causal_conv1d_fn"):
        fn = getattr(mod, attr)
        impl = None
        code = getattr(fn, "__code__", None)
        if code is not None and fn.__closure__ and "implementation" in code.co_freevars:
            impl = fn.__closure__[code.co_freevars.index("implementation")].cell_contents
        modname = getattr(impl, "__module__", "") or ""
        out.append(modname.split(".")[0] if impl is not None and not modname.startswith("transformers")
                   else "torch")
    return f"gdn={out[0]}, conv={out[1]}"


def lift_fla_hopper_guard() -> str:
    """fla 0.6 refuses its gated backward on Hopper with Triton in [3.4, 3.7.1) (fla #640, wrong gradients
    reported there); the device image has Triton 3.6. Lift the guard for the baseline's timing, as
    benchmarks/gdn.py does; the loss / grad-norm comparison below shows whether its gradients hold here."""
    if importlib.util.find_spec("fla") is None or DEV != "cuda":
        return ""
    try:
        import fla.ops.common.chunk_o as co
    except Exception as e:  # pragma: no cover
        return f"fla import failed: {type(e).__name__}"
    if getattr(co, "TRITON_ABOVE_3_4_0", False) and not getattr(co, "TRITON_ABOVE_3_7_1", True):
        co.TRITON_ABOVE_3_7_1 = True
        return "Hopper guard for Triton<3.7.1 lifted, fla #640"
    return ""


def baseline_report() -> dict[str, str]:
    be = transformers_gdn_backend()
    gdn, conv = be.split(", ")
    return {"gdn": gdn.split("=")[1] + " (transformers)", "conv": conv.split("=")[1] + " (no boundaries)",
            "gdn_layer": "transformers", "rope": "transformers", "attention": "sdpa",
            "gated_norm": "torch (transformers)", "rmsnorm": "torch (transformers)",
            "swiglu": "torch (transformers)", "fused_ce": "full logits (transformers)", "checkpoint": "none",
            "packing": "transformers default"}


# ---------------------------------------------------------------- one configuration

DEV = "cuda"
OURS_GDN = "auto"  # --ours-gdn


class Timer:
    """CUDA events on a GPU, the host clock (after a synchronize) elsewhere."""

    def __init__(self):
        self.cuda = DEV == "cuda"
        if self.cuda:
            self.s, self.e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)

    def start(self):
        if self.cuda:
            self.s.record()
        else:
            self.t0 = time.perf_counter()

    def stop(self):
        if self.cuda:
            self.e.record()
        else:
            self.t1 = time.perf_counter()

    def ms(self) -> float:
        return self.s.elapsed_time(self.e) if self.cuda else (self.t1 - self.t0) * 1e3


def sync():
    if DEV == "cuda":
        torch.cuda.synchronize()


def mem_reset():
    gc.collect()
    if DEV == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def mem_peak() -> tuple[float, float]:
    if DEV != "cuda":
        return float("nan"), float("nan")
    return torch.cuda.max_memory_allocated() / 2**30, torch.cuda.max_memory_reserved() / 2**30


def build(name: str, overrides: dict, checkpoint: str, seed: int):
    from hybrid_posttrain.models import load_model
    from hybrid_posttrain.models.hybrid import unroute_hybrid_layers

    kernels = "torch" if name == "baseline" or DEV != "cuda" else OURS_GDN
    with torch.device(DEV):
        model, _ = load_model("olmo-hybrid-7b", overrides=overrides, dtype="bfloat16", kernels=kernels,
                              seed=seed, with_tokenizer=False)
    model = model.to(DEV)
    model.config.use_cache = False
    if name == "baseline":
        from hybrid_posttrain.models.fastpath import set_fused_rope

        unroute_hybrid_layers()
        set_fused_rope(False)  # per-process routing an earlier configuration may have switched on
        report = baseline_report()
        note = lift_fla_hopper_guard()
        if note:
            report["gdn"] += f" [{note}]"
        if report["gdn"].startswith("torch") and importlib.util.find_spec("fla") is not None and DEV == "cuda":
            # transformers did not pick flash-linear-attention up by itself: give it fla through our routing,
            # with the plain torch conv and nothing else of ours (what the baseline ran)
            from hybrid_posttrain.models.hybrid import route_hybrid_layers, set_fused_conv

            route_hybrid_layers("fla")
            set_fused_conv(False)
            report.update(gdn="fla (routed)", conv="torch F.conv1d (routed)")
    else:
        from hybrid_posttrain.models.fastpath import apply_fast_path

        report = apply_fast_path(model, gdn=kernels, checkpoint=checkpoint)
    model.train()
    return model, report


def doc_positions(step: int, total: int, mean_len: int) -> torch.Tensor:
    """position_ids [1, total] of documents with random lengths (mean `mean_len`), restarting at 0 per document."""
    g = torch.Generator(device="cpu").manual_seed(2000 + step)
    lens, left = [], total
    while left > 0:
        n = min(left, int(torch.randint(mean_len // 4, 2 * mean_len - mean_len // 4 + 1, (1,), generator=g)))
        lens.append(n)
        left -= n
    return torch.cat([torch.arange(n) for n in lens])[None]


def step_inputs(step: int, batch: int, seq: int, vocab: int, device, packed_doc_len: int = 0) -> dict:
    """Model inputs of one step: batch x seq rows, or (packed_doc_len > 0) the same tokens as one packed row
    of documents of about that mean length (position_ids restart per document)."""
    if packed_doc_len:
        x = make_batch(step, 1, batch * seq, vocab, device)
        return dict(input_ids=x, labels=x, position_ids=doc_positions(step, batch * seq, packed_doc_len).to(device))
    x = make_batch(step, batch, seq, vocab, device)
    return dict(input_ids=x, labels=x)


def run_config(name: str, label: str, args, overrides: dict, checkpoint: str = "none", batch=None, seq=None,
               steps=None, warmup=None, packed_doc_len: int = 0) -> dict:
    batch = batch or args.batch
    seq = seq or args.seq
    steps = steps or args.steps
    warmup = args.warmup if warmup is None else warmup
    mem_reset()
    res = {"name": label, "batch": batch, "seq": seq, "checkpoint": checkpoint, "status": "ok"}
    model = opt = None
    t_build = time.time()
    try:
        model, report = build(name, overrides, checkpoint, args.seed)
        res["backends"] = report
        res["n_params"] = sum(p.numel() for p in model.parameters())
        res["param_checksum"] = float(sum(p.float().sum().item() for p in list(model.parameters())[:8]))
        opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.1, fused=True)
        res["build_s"] = round(time.time() - t_build, 1)
        mem_reset()  # the peak of training, not of building the model
        vocab = model.config.vocab_size
        losses, gnorms, times = [], [], []
        batches = []  # made before the loop: no host-to-device copy between timed steps
        for step in range(steps):
            batches.append(step_inputs(step, batch, seq, vocab, DEV, packed_doc_len))
        sync()
        wall0 = None
        for step in range(steps):
            inputs = batches[step]
            if step == warmup:
                sync()
                wall0 = time.perf_counter()
            timer = Timer()
            if DEV != "cuda" or step == 0:
                sync()
            timer.start()
            out = model(**inputs)
            out.loss.backward()
            gn = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            if DEV != "cuda":
                sync()
            timer.stop()
            losses.append(out.loss.detach().float())
            gnorms.append(gn.detach().float())
            del out
            if step >= warmup:
                times.append(timer)
            if step == 0:
                sync()
                res["first_step_s"] = round(timer.ms() / 1e3, 2)
        sync()
        if wall0 is not None and steps > warmup:
            res["wall_ms"] = (time.perf_counter() - wall0) * 1e3 / (steps - warmup)
        if args.profile and label in ("ours", "baseline") and DEV == "cuda" and args.out:
            from torch.profiler import ProfilerActivity, profile

            x = make_batch(steps, batch, seq, vocab, DEV)
            with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                out = model(input_ids=x, labels=x)
                out.loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
                opt.zero_grad(set_to_none=True)
                sync()
            del out
            txt = prof.key_averages().table(sort_by="cuda_time_total", row_limit=60, max_name_column_width=70)
            Path(args.out).mkdir(parents=True, exist_ok=True)
            (Path(args.out) / f"profile_{label}.txt").write_text(txt)
        ms = [t.ms() for t in times]
        res["ms_all"] = [round(v, 2) for v in ms]
        res["ms"] = statistics.median(ms) if ms else float("nan")
        res["loss"] = [v.item() for v in losses]
        res["gnorm"] = [v.item() for v in gnorms]
        bad = [i for i, (a, b) in enumerate(zip(res["loss"], res["gnorm"], strict=False))
               if not (math.isfinite(a) and math.isfinite(b))]
        res["first_nonfinite_step"] = bad[0] if bad else None
    except torch.OutOfMemoryError as e:
        res["status"] = "OOM"
        res["error"] = str(e).splitlines()[0][:200]
    except Exception as e:  # report and go on to the next configuration
        res["status"] = f"error: {type(e).__name__}"
        res["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"
        import traceback

        traceback.print_exc()
    res["peak_gib"], res["peak_reserved_gib"] = mem_peak()
    del model, opt
    mem_reset()
    if res["status"] == "ok":
        tokens = batch * seq
        res["tokens_per_s"] = tokens / (res["ms"] / 1e3)
    return res


# ---------------------------------------------------------------- output

def table(rows: list[list[str]], head: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in rows + [head]) for i in range(len(head))]
    line = "| " + " | ".join(str(h).ljust(w) for h, w in zip(head, widths, strict=False)) + " |"
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    body = ["| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=False)) + " |" for r in rows]
    return "\n".join([line, sep] + body)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="model config override (repeatable), e.g. --set num_hidden_layers=4")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=4096)
    ap.add_argument("--steps", type=int, default=20, help="optimizer steps per configuration (loss compared over all)")
    ap.add_argument("--warmup", type=int, default=4, help="untimed first steps")
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--checkpoint", default="none", help="our checkpoint policy (models/fastpath.py)")
    ap.add_argument("--ours-gdn", default="auto", help="GDN backend of ours (auto = hpt on CUDA)")
    ap.add_argument("--variants", default="mlp;mixers", help="extra rows of ours: checkpoint policies separated by ';', "
                                                         "e.g. 'mlp;attention,mlp'")
    ap.add_argument("--configs", default="baseline,ours")
    ap.add_argument("--long", type=int, default=32768, help="long-context check length (0: skip)")
    ap.add_argument("--long-checkpoint", default="mlp", help="checkpoint policy of the long-context check")
    ap.add_argument("--compare-batch", type=int, default=1,
                    help="batch for the loss comparison when the baseline runs out of memory at --batch")
    ap.add_argument("--compare-seq", type=int, default=1024, help="sequence length of that comparison")
    ap.add_argument("--packed-doc-len", type=int, default=2048,
                    help="extra row: ours on the same tokens packed into one sequence of documents of this mean "
                         "length (boundary-aware GDN, conv and attention; 0: skip)")
    ap.add_argument("--peak-tflops", type=float, default=None, help="bf16 dense peak (default by device name)")
    ap.add_argument("--smoke", action="store_true", help="plumbing check on the CPU with a tiny model")
    ap.add_argument("--profile", action="store_true", help="profile one extra step of baseline and ours into "
                                                           "OUT/profile_<config>.txt")
    ap.add_argument("--out", default=os.environ.get("OUT"), help="folder for train_step.json")
    args = ap.parse_args(argv)

    global DEV, OURS_GDN
    OURS_GDN = args.ours_gdn
    overrides = dict(MODEL_1B3)
    if args.smoke:
        DEV = "cpu"
        torch.set_num_threads(1)
        overrides.update(SMOKE_MODEL)
    elif not torch.cuda.is_available():
        fail("train_step: needs a CUDA GPU (this benchmark times real training steps); --smoke checks the "
             "plumbing on a CPU")
    overrides.update(parse_sets(args.set))
    from hybrid_posttrain.models.presets import build_config

    cfg = build_config("olmo-hybrid-7b", overrides)
    dev = device_name() if DEV == "cuda" else "cpu (smoke)"
    peak = peak_tflops(dev, args.peak_tflops)
    vs = versions()
    total_gib = torch.cuda.get_device_properties(0).total_memory / 2**30 if DEV == "cuda" else float("nan")
    print(f"device: {dev} ({total_gib:.1f} GiB), peak bf16 {peak:.0f} TFLOP/s")
    print("versions: " + ", ".join(f"{k} {v}" for k, v in vs.items()))
    print(f"model: hidden {cfg.hidden_size}, layers {cfg.num_hidden_layers} "
          f"({list(cfg.layer_types).count('linear_attention')} GDN + {list(cfg.layer_types).count('full_attention')}"
          f" attention), heads {cfg.num_attention_heads}, GDN heads {cfg.linear_num_value_heads} "
          f"K={cfg.linear_key_head_dim} V={cfg.linear_value_head_dim}, intermediate {cfg.intermediate_size}, "
          f"vocab {cfg.vocab_size}; batch {args.batch} x {args.seq}; {args.steps} steps ({args.warmup} warm-up), "
          f"fused AdamW lr {args.lr}, bf16 weights", flush=True)

    import signal

    def _stop(signum, frame):  # `timeout` sends SIGTERM: print the tables of what finished
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _stop)
    results = []
    try:
        run_all(args, overrides, results)
    except KeyboardInterrupt:
        print("interrupted: tables of the configurations that finished", flush=True)
    report(args, cfg, dev, peak, vs, results)
    return 0


def run_all(args, overrides, results):
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    for c in configs:
        t0 = time.time()
        r = run_config(c, c, args, overrides, checkpoint=args.checkpoint if c == "ours" else "none")
        if c == "ours" and r["status"].startswith("error") and importlib.util.find_spec("fla") and DEV == "cuda":
            # our GDN kernels failed here: measure the rest of the fast path with fla's recurrence
            print(f"[ours] {r.get('error')}: rerunning ours with the GDN recurrence on fla", flush=True)
            results.append(dict(r, name="ours (hpt failed)"))
            globals()["OURS_GDN"] = "fla"
            r = run_config(c, c, args, overrides, checkpoint=args.checkpoint)
        print(f"[{c}] {r['status']} in {time.time() - t0:.0f}s: "
              + (f"{r['ms']:.1f} ms/step, peak {r['peak_gib']:.1f} GiB" if r["status"] == "ok" else r.get("error", "")),
              flush=True)
        results.append(r)
    for v in [v.strip() for v in args.variants.split(";") if v.strip()]:
        r = run_config("ours", f"ours ckpt={v}", args, overrides, checkpoint=v, steps=args.warmup + 4)
        print(f"[ours ckpt={v}] {r['status']}: "
              + (f"{r['ms']:.1f} ms/step, peak {r['peak_gib']:.1f} GiB" if r["status"] == "ok" else r.get("error", "")),
              flush=True)
        results.append(r)
    if args.packed_doc_len:
        r = run_config("ours", f"ours packed docs~{args.packed_doc_len}", args, overrides, checkpoint=args.checkpoint,
                       steps=args.warmup + 4, packed_doc_len=args.packed_doc_len)
        r["batch_desc"] = f"1x{args.batch * args.seq}"
        print(f"[{r['name']}] {r['status']}: "
              + (f"{r['ms']:.1f} ms/step, peak {r['peak_gib']:.1f} GiB" if r["status"] == "ok" else r.get("error", "")),
              flush=True)
        results.append(r)

    # loss comparison at a smaller batch when the baseline could not run the full one
    compare = None
    base = next((r for r in results if r["name"] == "baseline"), None)
    ours = next((r for r in results if r["name"] == "ours"), None)
    if base and ours and base["status"] == "ok" and ours["status"] == "ok":
        compare = (base, ours, f"{args.batch} x {args.seq}")
    elif base and ours and ours["status"] == "ok" and args.compare_batch:
        print(f"baseline {base['status']} at {args.batch} x {args.seq}: comparing losses at "
              f"{args.compare_batch} x {args.compare_seq}", flush=True)
        b2 = run_config("baseline", "baseline", args, overrides, batch=args.compare_batch, seq=args.compare_seq)
        o2 = run_config("ours", "ours", args, overrides, checkpoint=args.checkpoint, batch=args.compare_batch,
                        seq=args.compare_seq)
        if b2["status"] == "ok" and o2["status"] == "ok":
            compare = (b2, o2, f"{args.compare_batch} x {args.compare_seq}")
        results += [dict(b2, name="baseline (compare batch)"), dict(o2, name="ours (compare batch)")]
    args._compare = compare

    long = None
    if args.long:
        long = run_config("ours", f"ours long {args.long}", args, overrides, checkpoint=args.long_checkpoint,
                          batch=1, seq=args.long, steps=2, warmup=1)
        if long["status"] == "OOM" and args.long_checkpoint != "all":
            print(f"long context OOM with ckpt={args.long_checkpoint} ({long['peak_gib']:.1f} GiB); retrying with "
                  f"ckpt=all", flush=True)
            long = run_config("ours", f"ours long {args.long} ckpt=all", args, overrides, checkpoint="all",
                              batch=1, seq=args.long, steps=2, warmup=1)
        results.append(long)
        args._long = long

    args._compare = compare
    args._long = long


def report(args, cfg, dev, peak, vs, results):
    compare = getattr(args, "_compare", None)
    long = getattr(args, "_long", None)
    base = next((r for r in results if r["name"] == "baseline"), None)
    ours = next((r for r in results if r["name"] == "ours"), None)
    # ---- tables
    rows = []
    for r in results:
        if r["name"].startswith("ours long"):
            continue
        fl = flop_counts(cfg, r["batch"], r["seq"], r.get("n_params") or 0)
        shape = r.get("batch_desc", f"{r['batch']}x{r['seq']}")
        if r["status"] == "ok":
            s = r["ms"] / 1e3
            rows.append([r["name"], shape, f"{r['ms']:.1f}", f"{r.get('wall_ms', float('nan')):.1f}",
                         f"{r['tokens_per_s'] / 1e3:.1f}k",
                         f"{100 * fl['6N'] / s / (peak * 1e12):.1f}%", f"{100 * fl['total'] / s / (peak * 1e12):.1f}%",
                         f"{r['peak_gib']:.1f}", r["checkpoint"]])
        else:
            rows.append([r["name"], shape, r["status"], "-", "-", "-", "-",
                         f"{r['peak_gib']:.1f}", r["checkpoint"]])
    print()
    n = next((r["n_params"] for r in results if r.get("n_params")), 0)
    print(f"## Training step ({dev}; N = {n / 1e9:.3f}B parameters; MFU over {peak:.0f} TFLOP/s)")
    print(table(rows, ["config", "batch", "ms/step", "wall ms", "tokens/s", "MFU 6N", "MFU +attn+GDN", "peak GiB",
                       "ckpt"]))
    if base and ours and ours["status"] == "ok":
        if base["status"] == "ok":
            print(f"ratios ours/baseline: tokens/s x{ours['tokens_per_s'] / base['tokens_per_s']:.2f}, "
                  f"ms/step x{ours['ms'] / base['ms']:.2f}, peak memory x{ours['peak_gib'] / base['peak_gib']:.2f}")
        else:
            print(f"ratios: baseline {base['status']} at {args.batch}x{args.seq} (peak {base['peak_gib']:.1f} GiB "
                  f"when it failed); ours {ours['tokens_per_s'] / 1e3:.1f}k tokens/s")
    print()
    print("## Backends")
    parts = ["gdn", "conv", "gdn_layer", "attention", "rope", "gated_norm", "rmsnorm", "swiglu", "fused_ce", "checkpoint", "packing"]
    brow = [[r["name"]] + [r.get("backends", {}).get(p, "-") for p in parts]
            for r in results if r.get("backends") and not r["name"].endswith("(compare batch)")]
    print(table(brow, ["config"] + parts))
    if compare:
        b, o, where = compare
        print()
        print(f"## Loss and grad norm, baseline vs ours, {len(b['loss'])} steps at {where} (same init: param "
              f"checksum {b['param_checksum']:.4f} vs {o['param_checksum']:.4f})")
        crow = []
        worst_l = worst_g = 0.0
        for i, (lb, lo, gb, go) in enumerate(zip(b["loss"], o["loss"], b["gnorm"], o["gnorm"], strict=False)):
            dl = abs(lo - lb) / max(abs(lb), 1e-9)
            dg = abs(go - gb) / max(abs(gb), 1e-9)
            dl, dg = (x if math.isfinite(x) else math.inf for x in (dl, dg))  # NaN must fail, not vanish in max()
            worst_l, worst_g = max(worst_l, dl), max(worst_g, dg)
            crow.append([str(i), f"{lb:.4f}", f"{lo:.4f}", f"{dl:.2e}", f"{gb:.4f}", f"{go:.4f}", f"{dg:.2e}"])
        print(table(crow, ["step", "loss base", "loss ours", "rel diff", "gnorm base", "gnorm ours", "rel diff"]))
        tol_l, tol_g = 2e-2, 1e-1
        print(f"max rel diff: loss {worst_l:.2e} (tolerance {tol_l:g}), grad norm {worst_g:.2e} (tolerance {tol_g:g}) "
              f"-> {'PASS' if worst_l <= tol_l and worst_g <= tol_g else 'FAIL'}")
    nonfinite = [r for r in results if r.get("first_nonfinite_step") is not None]
    if nonfinite:
        print()
        for r in nonfinite:
            print(f"NOT FINITE: {r['name']}: loss or grad norm NaN/inf from step {r['first_nonfinite_step']} "
                  f"-> FAIL (its timing is not a valid training result)")
    if long:
        print()
        print(f"## Long context: 1 x {long['seq']} tokens, forward+backward+step with ours "
              f"(ckpt={long['checkpoint']}): {long['status']}"
              + (f", {long['ms']:.0f} ms/step, peak {long['peak_gib']:.1f} GiB "
                 f"(reserved {long['peak_reserved_gib']:.1f})" if long["status"] == "ok" else
                 f", peak {long['peak_gib']:.1f} GiB when it failed"))
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        with open(Path(args.out) / "train_step.json", "w") as f:
            json.dump({"device": dev, "versions": vs, "config": cfg.to_dict(), "args": vars(args),
                       "results": results}, f, indent=1, default=str)
    return 0


if __name__ == "__main__":
    run_script(main)
