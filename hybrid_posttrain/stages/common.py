"""Functions every stage shares: TRL/Trainer arguments from the recipe, PEFT config, metrics logging.

Stages are thin adapters (recipe stage -> TRL config + trainer); they share these functions rather than
a base class. `trainer_kwargs(optim, ...)` maps our `Optim` block onto `TrainingArguments` fields that
every TRL config accepts; `MetricsCallback` appends each log row to the run's `metrics.jsonl` (main
process only) with tokens/s; `check_packing` refuses to pack a model whose recurrent layers cannot
receive document boundaries. `enable_fast_path(model)` switches `models/fastpath.py` on (fused GDN,
conv, norms, SwiGLU and linear+CE kernels on CUDA; the per-layer-type checkpointing policy of
`optim.checkpoint_layers`); every stage reaches it through `peft_config` / `check_packing`, which they all
call with the model before building their trainer.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from transformers import TrainerCallback

from hybrid_posttrain.data.io import append_jsonl
from hybrid_posttrain.errors import UserError
from hybrid_posttrain.models.hybrid import packing_supported


def use_bf16(optim) -> bool:
    if optim.bf16 == "on":
        return True
    if optim.bf16 == "off":
        return False
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


# The stage's Optim block, seen by trainer_kwargs, for the checkpoint policy that enable_fast_path applies at
# the first training forward (stages call trainer_kwargs and peft_config in either order).
_STAGE_OPTIM: dict = {"optim": None}


def _layer_policy(optim) -> str:
    """Our per-layer-type checkpoint policy ("none" when TRL's whole-model checkpointing does it, or none)."""
    layers = getattr(optim, "checkpoint_layers", "all")
    return layers if optim.gradient_checkpointing and layers != "all" else "none"


def trainer_kwargs(optim, output_dir: Path, seed: int, report_to: str = "none") -> dict:
    """TrainingArguments fields from our `Optim` block."""
    _STAGE_OPTIM["optim"] = optim
    return dict(
        output_dir=str(output_dir),
        learning_rate=optim.lr,
        num_train_epochs=optim.epochs,
        max_steps=optim.max_steps,
        per_device_train_batch_size=optim.per_device_batch_size,
        gradient_accumulation_steps=optim.grad_accum,
        warmup_steps=optim.warmup_ratio,  # a float < 1 is a ratio of total steps in transformers 5
        weight_decay=optim.weight_decay,
        lr_scheduler_type=optim.scheduler,
        max_grad_norm=optim.max_grad_norm,
        optim=optim.optim,
        bf16=use_bf16(optim),
        # whole-model checkpointing by transformers; a per-layer-type policy is ours (enable_fast_path)
        gradient_checkpointing=optim.gradient_checkpointing and _layer_policy(optim) == "none",
        logging_steps=optim.logging_steps,
        save_steps=optim.save_steps,
        save_total_limit=optim.save_total_limit,
        save_strategy="steps",
        seed=seed,
        data_seed=seed,
        report_to=report_to,
        disable_tqdm=False,
        dataloader_num_workers=0,
        use_cpu=not torch.cuda.is_available(),
    )


def peft_config(peft, model: torch.nn.Module):
    """A LoRA config covering attention and GDN projections present in `model` (None when disabled).

    Also switches the fast path on for `model` (`enable_fast_path`), before PEFT wraps it.
    """
    enable_fast_path(model)
    if not peft.enabled:
        return None
    from peft import LoraConfig

    present = {name.split(".")[-1] for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    targets = [t for t in peft.target_modules if t in present]
    if not targets:
        raise UserError(f"peft.target_modules match no linear layer of this model (it has {sorted(present)})")
    return LoraConfig(r=peft.r, lora_alpha=peft.alpha, lora_dropout=peft.dropout, target_modules=targets,
                      task_type="CAUSAL_LM")


def _apply_stage_policy(module, args, kwargs):
    """Forward pre-hook: at the first training forward, apply the stage's per-layer checkpoint policy."""
    if not module.training or not torch.is_grad_enabled() or getattr(module, "_hpt_policy_done", False):
        return None
    from hybrid_posttrain.models.fastpath import set_activation_checkpointing

    module._hpt_policy_done = True  # (a deep copy shares the flag's value, not the hook handle)
    module._hpt_policy_hook.remove()
    optim = _STAGE_OPTIM["optim"]
    if optim is not None and _layer_policy(optim) != "none":
        target = module.get_base_model() if hasattr(module, "get_base_model") else module
        set_activation_checkpointing(target, _layer_policy(optim))
    return None


def enable_fast_path(model: torch.nn.Module) -> dict | None:
    """Switch `models/fastpath.py` on for `model` on a CUDA machine (idempotent); returns its report.

    On a CPU-only machine the model is left as it is (the fused kernels need CUDA), except for the
    per-layer checkpoint policy, which is plain PyTorch and applies everywhere.
    """
    report = None
    if getattr(model, "_hpt_fast_path_on", False):
        return getattr(model, "_hpt_fast_path_report", None)
    from hybrid_posttrain.models import fastpath, hybrid

    if fastpath.fast_path_available():
        report = fastpath.apply_fast_path(model, gdn=None if hybrid.active_backend() else "auto")
        print("fast path: " + ", ".join(f"{k}={v}" for k, v in report.items()), flush=True)
    if getattr(model, "_hpt_policy_hook", None) is None:
        model._hpt_policy_hook = model.register_forward_pre_hook(_apply_stage_policy, with_kwargs=True)
    model._hpt_fast_path_on = True
    model._hpt_fast_path_report = report
    return report


def check_packing(model: torch.nn.Module, packing: bool) -> None:
    enable_fast_path(model)
    if not packing:
        return
    ok, reason = packing_supported(model)
    if not ok:
        raise UserError(f"refusing to pack: {reason}")


class MetricsCallback(TrainerCallback):
    """Append every log row to metrics.jsonl with the stage name and tokens/s since the last row."""

    def __init__(self, path: Path, stage: str):
        self.path = path
        self.stage = stage
        self.t0 = time.time()
        self.tokens = 0
        self.last_tokens = 0
        self.last_t = self.t0

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        now = time.time()
        self.tokens = int(state.num_input_tokens_seen or self.tokens)
        dt = max(now - self.last_t, 1e-9)
        row = {"stage": self.stage, "step": state.global_step, "epoch": state.epoch, **logs}
        if self.tokens:
            row["tokens_seen"] = self.tokens
            row["tokens_per_s"] = round((self.tokens - self.last_tokens) / dt, 1)
        self.last_tokens, self.last_t = self.tokens, now
        append_jsonl(self.path, row)


def trained_model(trainer, stage) -> torch.nn.Module:
    """The model a stage hands on: LoRA adapters merged when the stage used PEFT, and TRL's instance-level
    forward patches dropped, so later stages and `save_pretrained` see the class forward."""
    model = trainer.model
    if stage.peft.enabled:
        model = model.merge_and_unload()
    if "forward" in vars(model):
        del model.forward
    return model


def trainable_snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
