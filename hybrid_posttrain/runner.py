"""`hpt run RECIPE`: load the model once, run the recipe's stages in order, write the run dir.

Each stage is `hybrid_posttrain.stages.<type>:run_<type>(stage, model, tokenizer, stage_dir, recipe,
metrics_path, resume_from)` returning a dict with the trained `model` and its metrics. `--resume` skips
finished stages (state.json) and continues the current one from its last Trainer checkpoint.
With `launch.num_processes > 1` (or an accelerate / DeepSpeed config), the command re-launches itself
under `accelerate launch`; only the main process writes the run dir.
"""

from __future__ import annotations

import importlib
import inspect
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from hybrid_posttrain.artifacts import RunDir
from hybrid_posttrain.errors import UserError
from hybrid_posttrain.recipe import Recipe, load_recipe, resolved_dict

STAGE_FUNCS = {
    "sft": "hybrid_posttrain.stages.sft:run_sft",
    "dpo": "hybrid_posttrain.stages.dpo:run_dpo",
    "rl": "hybrid_posttrain.stages.rl:run_rl",
    "distill": "hybrid_posttrain.stages.distill:run_distill",
}


def _is_main() -> bool:
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0"))) == 0


def _under_launcher() -> bool:
    return "LOCAL_RANK" in os.environ or os.environ.get("HPT_LAUNCHED") == "1"


def _end_process_group(ok: bool) -> None:
    """A launched worker's last step: every rank meets at a barrier (only after a clean run: a rank that failed would
    leave the others waiting), then the process group is destroyed while the interpreter is whole. Left to
    interpreter exit, gloo's worker threads could die with 'terminate called without an active exception' (SIGABRT,
    exit status -6) after a run that had finished: seen on the CPU, 2 processes, in tests/stages/test_sft.py."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return
    if ok:
        dist.barrier()
    dist.destroy_process_group()


def run_dir_for(recipe: Recipe, output_dir: str | None) -> Path:
    return Path(output_dir or recipe.output_dir.format(name=recipe.name))


def run_recipe(recipe: Recipe, output_dir: str | Path, resume: bool = False) -> dict:
    import torch
    from transformers import set_seed

    from hybrid_posttrain.models import check_precision, load_model

    started = time.time()
    run = RunDir(output_dir)
    if not resume and run.metrics.exists() and _is_main():
        run.metrics.unlink()  # a fresh run does not append to an old run's metrics
    resolved = resolved_dict(recipe)
    if _is_main():
        run.write_recipe(resolved)
    state = run.state() if resume else {"finished_stages": []}
    finished = set(state["finished_stages"])
    set_seed(recipe.seed)
    m = recipe.model
    start_from = m.name
    if resume and finished and run.final.exists():
        start_from = str(run.final)  # stages already done live in the last saved model
    model, tok = load_model(start_from, m.overrides if start_from == m.name else None, m.dtype, m.kernels,
                            m.tokenizer, m.attn_implementation, recipe.seed)
    tokens = 0
    results: dict = {"stages": []}
    for i, stage in enumerate(recipe.stages):
        if i in finished:
            results["stages"].append(state.get("stage_metrics", {}).get(str(i), {}))
            continue
        mod, fn = STAGE_FUNCS[stage.type].split(":")
        func = getattr(importlib.import_module(mod), fn)
        stage_dir = run.stage_dir(i, stage.type)
        ckpt = run.last_checkpoint(i, stage.type) if resume else None
        if not resume and stage_dir.exists() and _is_main():
            shutil.rmtree(stage_dir)
        kwargs = dict(stage=stage, model=model, tokenizer=tok, stage_dir=stage_dir, recipe=recipe,
                      metrics_path=run.metrics, resume_from=str(ckpt) if ckpt else None)
        accepted = inspect.signature(func).parameters
        out = func(**{k: v for k, v in kwargs.items() if k in accepted})
        model = out.pop("model", model)
        tokens += int(out.get("tokens", 0))
        metrics = {k: v for k, v in out.items() if isinstance(v, (int, float, str, bool)) or v is None}
        results["stages"].append(metrics)
        if _is_main():
            model.save_pretrained(run.final)
            tok.save_pretrained(run.final)
            run.mark_stage_done(i, metrics)
    bad = check_precision(model)
    if bad:
        raise RuntimeError(f"precision policy violated after training: {bad[:3]}")
    if _is_main():
        if not run.final.exists():
            model.save_pretrained(run.final)
            tok.save_pretrained(run.final)
        data_files = [s.data.train for s in recipe.stages] + [s.data.eval for s in recipe.stages if s.data.eval]
        extra = {"stages": results["stages"], "model": m.name, "kernels": m.kernels,
                 "device": "cuda" if torch.cuda.is_available() else "cpu"}
        if recipe.eval.suites:
            from hybrid_posttrain.evaluation.runner import evaluate

            extra["eval"] = evaluate(str(run.final), recipe.eval.suites, str(run.path / "eval"),
                                     max_items=recipe.eval.max_items)
        results["manifest"] = run.write_manifest(resolved, data_files, started, tokens, extra)
    results["run_dir"] = str(run.path)
    return results


def _relaunch(args, recipe: Recipe) -> int:
    """Re-run this command under `accelerate launch` with the recipe's launch settings."""
    import socket

    with socket.socket() as sock:  # a free port, so concurrent launches do not collide
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    n = recipe.launch.num_processes
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(n), "--main_process_port",
           str(port)]
    if recipe.launch.accelerate_config:
        cmd += ["--config_file", recipe.launch.accelerate_config]
    if recipe.launch.deepspeed:
        cmd += ["--use_deepspeed", "--deepspeed_config_file", recipe.launch.deepspeed]
    elif n > 1:
        cmd += ["--multi_gpu"]  # torchrun-style workers; on a machine without CUDA they use gloo on the CPU
    cmd += ["-m", "hybrid_posttrain.cli", "run", args.recipe]
    for ov in args.overrides:
        cmd += ["--set", ov]
    if args.output_dir:
        cmd += ["--output-dir", args.output_dir]
    if args.resume:
        cmd += ["--resume"]
    env = dict(os.environ, HPT_LAUNCHED="1")  # the workers must not re-launch themselves
    return subprocess.call(cmd, env=env)


def main(args) -> int:
    recipe = load_recipe(args.recipe, args.overrides)
    launched = recipe.launch.num_processes > 1 or recipe.launch.accelerate_config or recipe.launch.deepspeed
    if launched and not _under_launcher():
        return _relaunch(args, recipe)
    out = run_dir_for(recipe, args.output_dir)
    if args.resume and not out.exists():
        raise UserError(f"--resume: run dir {out} does not exist (run without --resume first)")
    ok = False
    try:
        res = run_recipe(recipe, out, resume=args.resume)
        ok = True
    finally:
        _end_process_group(ok)
    if _is_main():
        man = res.get("manifest", {})
        print(f"run dir: {res['run_dir']}  wall {man.get('wall_time_s')} s  tokens/s {man.get('tokens_per_s')}")
        for i, st in enumerate(res["stages"]):
            print(f"  stage {i} {recipe.stages[i].type}: " + ", ".join(
                f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in st.items()))
    return 0
