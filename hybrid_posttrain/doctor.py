"""`hpt doctor MODEL [--kernels K] [--dtype D]`: is this hybrid model computed the way we think it is?

For a preset name, a local folder or a hub id, prints (rich tables):
1. Kernels: the GDN backend our routing selected (`models.hybrid.active_backend()`), which backends this
   machine can run and why not (`kernels.gdn.backends.backend_status()`), and the function every GDN
   entry point of the model's transformers module is bound to (short conv and chunked recurrence for prefill
   and training, conv update and recurrent step for decode).
2. Dtypes: every GDN parameter (grouped by name across layers: dtype, layer count) and the recurrent and conv
   state that a short prefill with a cache leaves behind. The precision policy wants `A_log`, `dt_bias`, the
   gated norms and the recurrent state in fp32; anything else is flagged.
3. Agreement: for a few prompts, token log-probs from chunked prefill (one forward over the whole sequence)
   against token-by-token recurrent decode (one token per forward, with `past_key_values`): max and mean
   absolute difference. This is the gap an RL trainer (chunked) and a rollout engine (recurrent) start from.

Exit status 0 when the report was produced (the report itself says what is off), 2 for a bad model name.
"""

from __future__ import annotations

import importlib
from collections import defaultdict

import torch

from hybrid_posttrain.stages.agreement import logprob_agreement, token_logprobs

ENTRY_POINTS = ("causal_conv1d_fn", "torch_chunk_gated_delta_rule", "causal_conv1d_update",
                "torch_recurrent_gated_delta_rule")
POLICY_FP32 = ("A_log", "dt_bias", "norm")


def _fn_name(fn) -> str:
    if fn is None:
        return "None"
    mod = getattr(fn, "__module__", "?") or "?"
    return f"{mod}.{getattr(fn, '__qualname__', getattr(fn, '__name__', repr(fn)))}"


def kernel_report(model) -> dict:
    from hybrid_posttrain.kernels.gdn.backends import backend_status
    from hybrid_posttrain.models.hybrid import ROUTED_MODULES, active_backend

    family = getattr(model.config, "model_type", "")
    entry = {}
    if family in ROUTED_MODULES:
        mod = importlib.import_module(ROUTED_MODULES[family])
        entry = {name: _fn_name(getattr(mod, name, None)) for name in ENTRY_POINTS if hasattr(mod, name)}
    from hybrid_posttrain.kernels.gdn.out_gluon import status as gluon_status

    return {"active_backend": active_backend(), "backends": backend_status(), "entry_points": entry,
            "family": family, "gluon": gluon_status()}


def gdn_param_dtypes(model) -> list[tuple[str, str, int, bool]]:
    """(parameter name within a GDN layer, dtype(s), number of layers, follows the policy)."""
    from hybrid_posttrain.models.hybrid import gdn_layers

    seen: dict[str, set[str]] = defaultdict(set)
    count: dict[str, int] = defaultdict(int)
    for _, layer in gdn_layers(model):
        for pname, p in layer.named_parameters():
            seen[pname].add(str(p.dtype).replace("torch.", ""))
            count[pname] += 1
    rows = []
    for pname in sorted(seen):
        must_fp32 = pname.endswith(("A_log", "dt_bias")) or "norm" in pname
        ok = (seen[pname] == {"float32"}) if must_fp32 else True
        rows.append((pname, ", ".join(sorted(seen[pname])), count[pname], ok))
    return rows


@torch.no_grad()
def state_dtypes(model, input_ids: torch.Tensor) -> list[tuple[int, str, str]]:
    """(layer index, recurrent state dtype, conv state dtype) after a prefill with a cache."""
    from hybrid_posttrain.models.hybrid import gdn_layers

    out = model(input_ids=input_ids, use_cache=True)
    cache = out.past_key_values
    rows = []
    for _, layer in gdn_layers(model):
        idx = getattr(layer, "layer_idx", None)
        if idx is None or cache is None or not hasattr(cache, "get_recurrent_state"):
            continue
        rec = cache.get_recurrent_state(idx)
        conv = cache.get_conv_state(idx) if hasattr(cache, "get_conv_state") else None
        rows.append((idx, str(getattr(rec, "dtype", None)).replace("torch.", ""),
                     str(getattr(conv, "dtype", None)).replace("torch.", "")))
    return rows


@torch.no_grad()
def prefill_vs_decode(model, input_ids: torch.Tensor) -> dict[str, float]:
    """Token log-probs of input_ids[1:] from one chunked forward vs a token-by-token decode with a cache."""
    ids = input_ids[:1]
    prefill = model(input_ids=ids, use_cache=False).logits[0, :-1]
    lp_prefill = token_logprobs(prefill, ids[0, 1:])
    past = None
    steps = []
    for t in range(ids.shape[1] - 1):
        out = model(input_ids=ids[:, t:t + 1], past_key_values=past, use_cache=True,
                    position_ids=torch.tensor([[t]], device=ids.device))
        past = out.past_key_values
        steps.append(out.logits[0, -1])
    lp_decode = token_logprobs(torch.stack(steps), ids[0, 1:])
    return logprob_agreement(lp_decode, lp_prefill)


def doctor_prompts(tokenizer, n: int = 3) -> list[list[int]]:
    """A few chat sequences (toyworld programs with a worked answer) of a few dozen tokens each."""
    from hybrid_posttrain.tasks.toyworld import program_items, solve

    seqs = []
    for item in program_items(1, [2, 4, 6][:n], seed=123, split="doctor"):
        msgs = [{"role": "user", "content": item.prompt}, {"role": "assistant", "content": solve(item, "cot")[0]}]
        enc = tokenizer.apply_chat_template(msgs, tokenize=True)
        ids = enc["input_ids"] if hasattr(enc, "keys") else enc
        seqs.append(list(ids))
    return seqs


def main(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from hybrid_posttrain.models import load_model

    console = Console(width=max(Console().width, 150))
    model, tok = load_model(args.model, dtype=args.dtype, kernels=args.kernels)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device).eval()
    from hybrid_posttrain.models import apply_precision_policy

    apply_precision_policy(model)  # `.to()` keeps dtypes, but be explicit: the report is about the policy
    console.print(f"[bold]hpt doctor[/bold] {args.model}: {type(model).__name__}, model dtype "
                  f"{str(model.dtype).replace('torch.', '')}, device {device}, torch {torch.__version__}")

    k = kernel_report(model)
    t = Table(title="GDN kernels")
    t.add_column("what")
    t.add_column("value")
    t.add_row("active backend (routing)", str(k["active_backend"]))
    for name, why in k["backends"].items():
        t.add_row(f"backend {name}", "available" if why is None else f"[yellow]{why}[/yellow]")
    why = k["gluon"]
    t.add_row("hpt Gluon kernels (forward output, backward dqk / wy)",
              "Gluon (Hopper), where a launch's shapes allow" if why is None else f"Triton: [yellow]{why}[/yellow]")
    for name, fn in k["entry_points"].items():
        t.add_row(f"{k['family']}.{name}", fn)
    if not k["entry_points"]:
        t.add_row("entry points", f"model type {k['family']!r} has no GDN layers we route")
    console.print(t)

    rows = gdn_param_dtypes(model)
    t = Table(title="GDN parameter dtypes (every parameter of every GDN layer, grouped by name)")
    for c in ("parameter", "dtype", "layers", "policy"):
        t.add_column(c)
    for pname, dt, n, ok in rows:
        must = pname.endswith(("A_log", "dt_bias")) or "norm" in pname
        t.add_row(pname, dt, str(n), ("fp32 ok" if ok else "[red]must be fp32[/red]") if must else "-")
    if not rows:
        t.add_row("(no GDN layers)", "-", "0", "-")
    console.print(t)

    seqs = doctor_prompts(tok)
    first = torch.tensor([seqs[0]], device=device)
    states = state_dtypes(model, first)
    t = Table(title="Recurrent state after a prefill with cache")
    for c in ("layer", "recurrent state", "conv state"):
        t.add_column(c)
    for idx, rec, conv in states:
        t.add_row(str(idx), rec if rec == "float32" else f"[red]{rec} (policy: float32)[/red]", conv)
    console.print(t)

    t = Table(title="Log-prob agreement: chunked prefill vs token-by-token recurrent decode")
    for c in ("prompt", "tokens", "max |diff|", "mean |diff|"):
        t.add_column(c, justify="right")
    worst, total, n_tok = 0.0, 0.0, 0
    for i, ids in enumerate(seqs):
        stats = prefill_vs_decode(model, torch.tensor([ids], device=device))
        worst = max(worst, stats["max"])
        total += stats["mean"] * stats["tokens"]
        n_tok += stats["tokens"]
        t.add_row(str(i), str(stats["tokens"]), f"{stats['max']:.3e}", f"{stats['mean']:.3e}")
    t.add_row("all", str(n_tok), f"{worst:.3e}", f"{total / max(n_tok, 1):.3e}")
    console.print(t)
    return 0
