"""`hpt eval --model PATH --suites NAME... [--output-dir DIR] [--max-items N] [--backend hf] [--batch-size B]
[--set key.path=value]...`: score a saved model on eval suites.

Multiple-choice suites are scored by batched log-likelihood (`loglikelihoods`: each (context,
continuation) pair tokenised as lm-evaluation-harness does, right-padded, one forward per batch, only the
continuation tokens summed). Generative suites go through the shared generation interface
(`generation.make_generator(backend, ...)`) and are graded by the suite's extractor and grader.

Output layout:

    <out>/<suite>/results.jsonl   one row per item: id, prompt, output, extracted, gold, correct, depth...
    <out>/summary.json            {"model", "suites": {name: {category, type, metric, value, ci_low,
                                   ci_high, n, by_depth?, by_subset, ...}}}

A re-run skips finished items: rows are appended (fsynced) after each batch, tagged with a fingerprint of
the suite spec, and only rows with the current fingerprint count as done; when a suite finishes its file
is rewritten atomically in item order. `--set toyworld.seed=1` (any suite key) applies to every suite.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from hybrid_posttrain.data.io import iter_jsonl, read_json, stable_hash, write_json, write_jsonl
from hybrid_posttrain.errors import UserError
from hybrid_posttrain.evaluation.loaders import EvalItem, build_prompt, limit_items, load_suite_items
from hybrid_posttrain.evaluation.scoring import aggregate, aggregate_by, grade_output, mc_scores
from hybrid_posttrain.evaluation.suites import SuiteSpec, resolve_suite

SUMMARY = "summary.json"
RESULTS = "results.jsonl"


# ------------------------------------------------------------------------------------ log-likelihood

def encode_pair(tok, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """Context and continuation token ids, split the way lm-evaluation-harness splits them: trailing
    whitespace of the context moves to the continuation, the pair is tokenised whole, and the continuation
    is what follows the context's own tokens."""
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces > 0:
        continuation = context[-n_spaces:] + continuation
        context = context[:-n_spaces]
    whole = tok(context + continuation, add_special_tokens=False, verbose=False)["input_ids"]
    ctx = tok(context, add_special_tokens=False, verbose=False)["input_ids"]
    if not ctx:  # an empty context conditions on the end-of-text token, as the harness does
        prefix = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
        return [prefix], whole
    return ctx, whole[len(ctx):]


def loglikelihoods(model, tok, requests: Sequence[tuple[str, str]], batch_size: int = 16,
                   progress: bool = False, max_length: int | None = None) -> list[tuple[float, bool]]:
    """(sum of continuation log-probs, whether the continuation is the greedy one) for each request.

    The model input of a request is `(context + continuation)[:-1]`; requests with the same input (the
    choices of one question when each is a single token, as MMLU's letters are) share one row. Rows are
    sorted longest first, right-padded into batches of `batch_size`, one forward per batch, and each
    request sums the log-probs of its own continuation tokens."""
    import torch
    from tqdm.auto import tqdm

    max_length = max_length or int(getattr(model.config, "max_position_embeddings", 4096) or 4096)
    device = next(model.parameters()).device
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
    rows: dict[tuple[int, ...], list[tuple[int, list[int]]]] = {}  # model input -> [(request, continuation)]
    for i, (ctx, cont) in enumerate(requests):
        c, k = encode_pair(tok, ctx, cont)
        if not k:
            raise UserError(f"empty continuation after tokenisation for choice {cont!r}")
        full = (c + k)[-(max_length + 1):]  # left-truncated to the model's length, as the harness does
        rows.setdefault(tuple(full[:-1]), []).append((i, k))
    inputs = sorted(rows, key=len, reverse=True)
    out: list[tuple[float, bool]] = [(0.0, False)] * len(requests)
    bar = tqdm(total=len(requests), desc="loglikelihood", unit="req", disable=not progress, leave=False)
    with torch.inference_mode():
        for start in range(0, len(inputs), batch_size):
            batch = inputs[start:start + batch_size]
            width = len(batch[0])
            ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for r, inp in enumerate(batch):
                ids[r, :len(inp)] = torch.tensor(inp, dtype=torch.long)
                mask[r, :len(inp)] = 1
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
            for r, inp in enumerate(batch):
                for i, cont in rows[inp]:
                    n = len(cont)
                    lp_rows = logits[r, len(inp) - n:len(inp)].float().log_softmax(-1)
                    target = torch.tensor(cont, dtype=torch.long, device=lp_rows.device)
                    lp = lp_rows.gather(-1, target[:, None]).squeeze(-1)
                    out[i] = (float(lp.sum()), bool((lp_rows.argmax(-1) == target).all()))
                bar.update(len(rows[inp]))
    bar.close()
    return out


def mc_context(spec: SuiteSpec, tok, prompt: str) -> str:
    """The scored context: the prompt itself, or its chat rendering followed by `assistant_prefix`."""
    if not spec.prompt.chat:
        return prompt
    msgs = ([{"role": "system", "content": spec.prompt.system}] if spec.prompt.system else []) + \
        [{"role": "user", "content": prompt}]
    return tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True) + spec.prompt.assistant_prefix


# ------------------------------------------------------------------------------------------ per suite

def fingerprint(spec: SuiteSpec, model_id: str) -> str:
    """What a cached row depends on: the suite spec and the model."""
    return stable_hash({"spec": spec.model_dump(mode="json"), "model": model_id})


def _base_row(spec: SuiteSpec, it: EvalItem, prompt: str, fp: str) -> dict:
    row = {"id": it.id, "suite": spec.name, "subset": it.subset, "prompt": prompt, "gold": it.gold}
    if "depth" in it.meta:
        row["depth"] = it.meta["depth"]
    row["meta"] = {k: v for k, v in it.meta.items() if k not in ("solution",)}
    row["fingerprint"] = fp
    return row


def score_mc(spec: SuiteSpec, items: list[EvalItem], prompts: list[str], model, tok, batch_size: int,
             fp: str) -> list[dict]:
    requests = []
    for it, prompt in zip(items, prompts, strict=True):
        ctx = mc_context(spec, tok, prompt)
        requests += [(ctx, spec.prompt.target_delimiter + c) for c in it.choices]
    results = loglikelihoods(model, tok, requests, batch_size)
    rows, k = [], 0
    for it, prompt in zip(items, prompts, strict=True):
        res = results[k:k + len(it.choices)]
        k += len(it.choices)
        lls = [r[0] for r in res]
        s = mc_scores(lls, it.choices, it.gold_index)
        pick = s["pred_norm"] if spec.metric == "acc_norm" else s["pred"]
        row = _base_row(spec, it, mc_context(spec, tok, prompt), fp)
        row.update({"choices": it.choices, "gold_index": it.gold_index, "lls": lls,
                    "is_greedy": [r[1] for r in res], "pred": s["pred"], "pred_norm": s["pred_norm"],
                    "output": it.choices[pick], "extracted": it.choices[pick], "acc": s["acc"],
                    "acc_norm": s["acc_norm"], "correct": s[spec.metric]})
        rows.append(row)
    return rows


def score_generative(spec: SuiteSpec, items: list[EvalItem], prompts: list[str], generator, fp: str
                     ) -> list[dict]:
    from hybrid_posttrain.generation import Sampling

    conv = []
    for prompt in prompts:
        msgs = ([{"role": "system", "content": spec.prompt.system}] if spec.prompt.system else [])
        conv.append(msgs + [{"role": "user", "content": prompt}])
    g = spec.generation
    sampling = Sampling(temperature=g.temperature, max_new_tokens=g.max_new_tokens, n=1, seed=0)
    outs = generator.generate(conv, sampling, progress=False)
    rows = []
    for it, prompt, comps in zip(items, prompts, outs, strict=True):
        c = comps[0]
        extracted, ok = grade_output(c.text, it.gold, it.fields.get("question", prompt), spec.grader,
                                     spec.extractor, g.stop)
        row = _base_row(spec, it, prompt, fp)
        row.update({"output": c.text, "extracted": extracted, "correct": float(ok), "n_tokens": c.n_tokens,
                    "finish_reason": c.finish_reason})
        rows.append(row)
    return rows


def _cached_rows(path: Path, fp: str) -> dict[str, dict]:
    if not path.exists():
        return {}
    rows = {}
    for _, row in iter_jsonl(path, tolerate_partial_last=True):
        if row.get("fingerprint") == fp and "id" in row:
            rows[str(row["id"])] = row
    return rows


def _append_rows(path: Path, rows: list[dict]) -> None:
    import json
    import os

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False, default=str) + "\n")
        f.flush()
        os.fsync(f.fileno())


def summarize(spec: SuiteSpec, rows: list[dict]) -> dict:
    """The summary entry of one suite from its per-item rows."""
    entry = {"category": spec.category, "type": spec.type, "metric": spec.metric, "source": spec.source,
             **aggregate([r["correct"] for r in rows], spec.bootstrap)}
    if spec.type == "multiple_choice":
        entry["acc"] = aggregate([r["acc"] for r in rows], spec.bootstrap)
        entry["acc_norm"] = aggregate([r["acc_norm"] for r in rows], spec.bootstrap)
    if any("depth" in r for r in rows):
        entry["by_depth"] = aggregate_by(rows, "depth", n_boot=spec.bootstrap)
    if "by_depth" not in entry and len({r.get("subset", "") for r in rows}) > 1:
        entry["by_subset"] = aggregate_by(rows, "subset", n_boot=spec.bootstrap)
    return entry


def run_suite(spec: SuiteSpec, spec_file: Path | None, out_dir: Path, model_id: str, *, model=None, tok=None,
              generator=None, batch_size: int = 16, max_items: int | None = None, progress: bool = True
              ) -> dict:
    """Score one suite (resuming from `out_dir/<suite>/results.jsonl`); returns its summary entry."""
    from tqdm.auto import tqdm

    items, shots = load_suite_items(spec, spec_file)
    items = limit_items(items, max_items)
    fp = fingerprint(spec, model_id)
    path = out_dir / spec.name / RESULTS
    done = _cached_rows(path, fp)
    todo = [it for it in items if it.id not in done]
    t0 = time.perf_counter()
    chunk = max(1, batch_size) * (2 if spec.type == "multiple_choice" else 1)
    bar = tqdm(total=len(items), initial=len(items) - len(todo), desc=spec.name, unit="item",
               disable=not progress)
    for start in range(0, len(todo), chunk):
        part = todo[start:start + chunk]
        prompts = [build_prompt(spec, it, shots) for it in part]
        if spec.type == "multiple_choice":
            if model is None:
                raise UserError(f"suite {spec.name!r} is multiple_choice and needs the HF model for "
                                f"log-likelihoods")
            rows = score_mc(spec, part, prompts, model, tok, batch_size, fp)
        else:
            rows = score_generative(spec, part, prompts, generator, fp)
        _append_rows(path, rows)
        for r in rows:
            done[r["id"]] = r
        bar.update(len(part))
    bar.close()
    elapsed = time.perf_counter() - t0
    rows = [done[it.id] for it in items]
    write_jsonl(path, rows)  # compact: current rows only, in item order
    entry = summarize(spec, rows)
    entry["throughput"] = {"items": len(todo), "seconds": round(elapsed, 3),
                           "items_per_s": round(len(todo) / elapsed, 3) if todo and elapsed > 0 else None}
    return entry


# ---------------------------------------------------------------------------------------------- entry

def default_output_dir(model_path: str) -> Path:
    """`runs/x/final` -> `runs/x/eval` (a run dir's eval folder); any other model -> `runs/eval/<name>`."""
    p = Path(model_path)
    if p.name == "final" or p.name.startswith("checkpoint-"):
        return p.parent / "eval"
    return Path("runs") / "eval" / p.name


def evaluate(model_path: str, suites: Sequence[str], output_dir: str | Path | None = None, *,
             max_items: int | None = None, backend: str = "hf", batch_size: int = 16,
             overrides: Sequence[str] = (), model=None, tokenizer=None, generator=None,
             progress: bool = True) -> dict:
    """Score `model_path` on `suites` (names or paths); writes and returns the summary. A preloaded
    `model`/`tokenizer` or `generator` may be passed (stages and tests reuse theirs)."""
    resolved = [resolve_suite(s, list(overrides)) for s in suites]
    names = [spec.name for spec, _ in resolved]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise UserError(f"two suites are named {sorted(dup)[0]!r}; suite names must be unique in one eval")
    out = Path(output_dir) if output_dir is not None else default_output_dir(model_path)
    need_mc = any(spec.type == "multiple_choice" for spec, _ in resolved)
    need_gen = any(spec.type == "generative" for spec, _ in resolved)
    own_model = model is None and (need_mc or (need_gen and generator is None and backend == "hf"))
    if own_model:
        import torch

        from hybrid_posttrain.models import load_model

        model, tokenizer = load_model(str(model_path))
        if torch.cuda.is_available():
            model = model.cuda()
    if model is not None:
        model.eval()
    summary_path = out / SUMMARY
    summary = read_json(summary_path) if summary_path.exists() else {}
    summary.setdefault("suites", {})
    summary["model"] = str(model_path)

    def run(spec: SuiteSpec, spec_file: Path, gen) -> None:
        entry = run_suite(spec, spec_file, out, str(model_path), model=model, tok=tokenizer, generator=gen,
                          batch_size=batch_size, max_items=max_items, progress=progress)
        entry["suite_file"] = str(spec_file)
        summary["suites"][spec.name] = entry
        write_json(summary_path, summary)  # after every suite, so a killed eval keeps what finished

    # log-likelihood suites first: with another backend (vllm) the HF model is freed before it starts
    for spec, spec_file in resolved:
        if spec.type == "multiple_choice":
            run(spec, spec_file, None)
    if need_gen:
        own_generator = generator is None
        if own_generator:
            from hybrid_posttrain.generation import make_generator

            try:
                if backend == "hf":
                    generator = make_generator("hf", model=model, tokenizer=tokenizer, batch_size=batch_size)
                else:
                    if own_model:
                        model = None
                        _free_accelerator_memory()
                    generator = make_generator(backend, model=str(model_path))
            except ImportError as e:  # an optional backend that is not installed here
                raise UserError(f"generation backend {backend!r} is not available: {e}; use --backend hf",
                                "--backend", 1) from None
        for spec, spec_file in resolved:
            if spec.type == "generative":
                run(spec, spec_file, generator)
        if own_generator and hasattr(generator, "close"):
            generator.close()
    summary["suites"] = {**{spec.name: summary["suites"][spec.name] for spec, _ in resolved},
                         **{k: v for k, v in summary["suites"].items() if k not in names}}
    write_json(summary_path, summary)
    return summary


def _free_accelerator_memory() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def main(args) -> int:
    if not Path(args.model).exists():
        raise UserError(f"model folder {args.model!r} does not exist (give a saved model folder, e.g. "
                        f"runs/demo-sft/final)", "--model", 1)
    if args.batch_size is not None and args.batch_size < 1:
        raise UserError("--batch-size must be at least 1", "--batch-size", 1)
    summary = evaluate(args.model, args.suites, args.output_dir, max_items=args.max_items, backend=args.backend,
                       batch_size=args.batch_size, overrides=getattr(args, "overrides", []) or [])
    out = Path(args.output_dir) if args.output_dir else default_output_dir(args.model)
    overrides = getattr(args, "overrides", []) or []
    for name in [resolve_suite(s, overrides)[0].name for s in args.suites]:
        e = summary["suites"][name]
        rate = e.get("throughput", {}).get("items_per_s")
        print(f"{name:24s} {e['category']:9s} {e['metric']:8s} {e['value']:.3f} "
              f"[{e['ci_low']:.3f}, {e['ci_high']:.3f}] n={e['n']}" + (f"  {rate} items/s" if rate else ""))
    print(f"wrote {out / SUMMARY}")
    return 0
