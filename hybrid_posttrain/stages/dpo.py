"""The DPO stage: a recipe's `dpo` block -> TRL `DPOConfig` + `DPOTrainer`, with a packed path for hybrids.

Data: preference rows `{"prompt", "chosen", "rejected"}` (chat messages or strings) from a JSONL file or
`toyworld:preference`; `eval_fraction` holds out the last pairs to measure preference accuracy before and
after training (the fraction of held-out pairs whose chosen response the policy finds more likely, and, after
training, the implicit-reward accuracy against the starting model, which is DPO's reference).

Loss: any loss type TRL 1.16 exposes (`sigmoid`, `ipo`, `hinge`, ...). `length_normalize: true` is the
length-normalised DPO of the OLMo recipes: with `sigmoid` it selects TRL's `sigmoid_norm` (log-ratios divided by
the number of completion tokens); `ipo` is length-normalised in TRL already. Reference: a frozen copy of the
model (`reference: copy`), or, under LoRA, the same model with its adapters disabled
(`reference: adapters_disabled`); `precompute_ref_log_probs` scores the data once before training.

Packing: TRL 1.16 turned padding-free DPO off. `packing: true` gives the trainer's forwards (policy and
reference) a packed path instead: `pack_forward(model)` wraps the model's (fused-head) forward so that the
[2B, L] right-padded chosen+rejected batch runs as one [1, T] row of real tokens with `position_ids` restarting
at 0 per sequence; the boundary logic of `models/hybrid.py` turns those into `cu_seq_lens_q` / `seq_idx`, which
reach every GDN layer and its short convolution (and attention gets a block-causal mask from the positions).
The per-token outputs are scattered back into the padded layout, so TRL's loss code is untouched.
`tests/invariants/test_dpo_packing.py` proves packed == unpacked log-probs and loss, and that it fails when the
boundaries are removed.
"""

from __future__ import annotations

import copy
import types
from pathlib import Path

import torch

from hybrid_posttrain.data.sources import load_rows
from hybrid_posttrain.errors import UserError
from hybrid_posttrain.stages.common import (
    MetricsCallback,
    check_packing,
    peft_config,
    trained_model,
    trainer_kwargs,
)

PACKED_ATTR = "_hpt_packed_forward"


# ------------------------------------------------------------------------------------------------- data

def _as_messages(value, role: str) -> list[dict]:
    return value if isinstance(value, list) else [{"role": role, "content": str(value)}]


def preference_rows(stage, seed: int) -> list[dict]:
    """Preference rows of the stage, normalised to chat messages (prompt: user turns, chosen/rejected: assistant)."""
    rows = load_rows(stage.data.train, "preference", stage.data.toyworld, seed, stage.data.max_samples)
    if not rows:
        raise UserError(f"{stage.data.train}: no preference rows (check the source and its toyworld settings)")
    return [{"prompt": _as_messages(r["prompt"], "user"), "chosen": _as_messages(r["chosen"], "assistant"),
             "rejected": _as_messages(r["rejected"], "assistant")} for r in rows]


def split_rows(rows: list[dict], eval_fraction: float) -> tuple[list[dict], list[dict]]:
    n_eval = int(round(len(rows) * eval_fraction))
    if eval_fraction > 0 and (n_eval < 1 or n_eval >= len(rows)):
        raise UserError(f"eval_fraction {eval_fraction} leaves no train or no held-out pairs ({len(rows)} rows)")
    return (rows[:len(rows) - n_eval], rows[len(rows) - n_eval:]) if n_eval else (rows, [])


def trl_loss_type(stage) -> list[str]:
    """Our `loss_type` + `length_normalize` as TRL's `loss_type` list."""
    if stage.length_normalize and stage.loss_type == "sigmoid":
        return ["sigmoid_norm"]
    return [stage.loss_type]


# ------------------------------------------------------------------------------------------- packed forward

def pack_padded(input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor | None = None):
    """Right-padded [N, L] rows -> one [1, T] row of their real tokens, position_ids restarting per row.

    Returns (ids, position_ids, labels or None, keep [N, L] bool, seg_end [T] bool). The first label of each
    row is set to -100: it would be predicted from the previous row's last token.
    """
    keep = attention_mask.bool()
    lengths = keep.sum(1)
    if not torch.equal(keep, torch.arange(keep.shape[1], device=keep.device)[None] < lengths[:, None]):
        raise ValueError("pack_padded needs right-padded rows (attention_mask a prefix of ones)")
    ids = input_ids[keep][None]
    starts = torch.cumsum(lengths, 0) - lengths
    total = int(lengths.sum())
    pos = torch.arange(total, device=ids.device) - torch.repeat_interleave(starts, lengths)
    seg_end = torch.zeros(total, dtype=torch.bool, device=ids.device)
    seg_end[torch.cumsum(lengths, 0) - 1] = True
    lab = None
    if labels is not None:
        lab = labels[keep].clone()
        lab[starts] = -100
        lab = lab[None]
    return ids, pos[None], lab, keep, seg_end


def unpack_shifted(x: torch.Tensor | None, keep: torch.Tensor, seg_end: torch.Tensor) -> torch.Tensor | None:
    """A packed next-token field [1, T-1] -> the padded layout [N, L-1] (zeros where there is no next token)."""
    if x is None:
        return None
    valid = keep[:, 1:]
    src = x[0][~seg_end[:-1]]
    return x.new_zeros(valid.shape).masked_scatter(valid, src)


def boundary_kwargs(position_ids: torch.Tensor) -> dict:
    """`cu_seq_lens_q/k`, `max_length_q/k`, `seq_idx` for packed `position_ids` (the boundary hook's logic)."""
    from hybrid_posttrain.models.hybrid import _boundary_pre_hook

    _, kwargs = _boundary_pre_hook(None, (), {"position_ids": position_ids})
    return {k: v for k, v in kwargs.items() if k != "position_ids"}


def pack_forward(model: torch.nn.Module) -> None:
    """Wrap `model.forward` (after TRL's `add_fused_lm_head`) so `fused_lm_head=True` calls run packed."""
    if getattr(model, PACKED_ATTR, False):
        return
    inner = model.forward

    def forward(self, *args, fused_lm_head: bool = False, **kwargs):
        ids, mask = kwargs.get("input_ids"), kwargs.get("attention_mask")
        if (not fused_lm_head or args or ids is None or mask is None or mask.dim() != 2
                or kwargs.get("past_key_values") is not None or kwargs.get("position_ids") is not None):
            return inner(*args, fused_lm_head=fused_lm_head, **kwargs)
        labels = kwargs.pop("labels", None)
        packed_ids, pos, packed_labels, keep, seg_end = pack_padded(ids, mask, labels)
        kwargs.update(input_ids=packed_ids, position_ids=pos, attention_mask=None, labels=packed_labels,
                      **boundary_kwargs(pos))
        out = inner(fused_lm_head=True, **kwargs)
        for field in ("log_probs", "entropy", "log_sum_sq_probs", "mean_logits", "is_top1", "label_mask"):
            if getattr(out, field, None) is not None:
                out[field] = unpack_shifted(out[field], keep, seg_end)
        return out

    model.forward = types.MethodType(forward, model)
    setattr(model, PACKED_ATTR, True)


def _inner_model(module: torch.nn.Module) -> torch.nn.Module:
    """The transformers model under PEFT / DeepSpeed / DDP wrappers (the one whose forward TRL patched)."""
    m = getattr(module, "module", module)  # DeepSpeed engine, DDP
    if hasattr(m, "get_base_model"):
        m = m.get_base_model()
    return m


def make_dpo_trainer_class():
    """`PackedDPOTrainer`: TRL's DPOTrainer whose policy and reference forwards run packed (see module doc)."""
    from trl import DPOTrainer

    class PackedDPOTrainer(DPOTrainer):
        def __init__(self, *args, pack: bool = True, max_prompt_length: int | None = None, **kwargs):
            self._max_prompt_length = max_prompt_length
            super().__init__(*args, **kwargs)
            if pack:
                pack_forward(_inner_model(self.model))
                if self.ref_model is not None:
                    pack_forward(_inner_model(self.ref_model))

        def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
            dataset = super()._prepare_dataset(dataset, processing_class, args, dataset_name)
            n = self._max_prompt_length
            if n and "prompt_ids" in dataset.column_names:  # keep the end of over-long prompts
                dataset = dataset.map(lambda ex: {"prompt_ids": ex["prompt_ids"][-n:]})
            return dataset

    return PackedDPOTrainer


# ------------------------------------------------------------------------------------ preference accuracy

def _tokenize_pair(tokenizer, row: dict) -> tuple[list[int], list[int], list[int]]:
    prompt = tokenizer.apply_chat_template(row["prompt"], add_generation_prompt=True, tokenize=True)
    prompt = list(prompt["input_ids"] if isinstance(prompt, dict) or hasattr(prompt, "keys") else prompt)
    fulls = []
    for key in ("chosen", "rejected"):
        full = tokenizer.apply_chat_template(row["prompt"] + row[key], tokenize=True)
        fulls.append(list(full["input_ids"] if isinstance(full, dict) or hasattr(full, "keys") else full))
    n = 0  # like TRL: the completion starts where prompt and prompt+completion first differ
    while n < len(prompt) and all(n < len(f) and f[n] == prompt[n] for f in fulls):
        n += 1
    return prompt[:n], fulls[0][n:], fulls[1][n:]


@torch.no_grad()
def completion_logps(model, tokenizer, rows: list[dict], batch_size: int = 16) -> torch.Tensor:
    """[n, 2] summed log-probs of (chosen, rejected) completions given the prompt, one sequence per row."""
    seqs = []
    for row in rows:
        prompt, chosen, rejected = _tokenize_pair(tokenizer, row)
        seqs += [(prompt, chosen), (prompt, rejected)]
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    if device.type == "cpu" and torch.cuda.is_available():  # before the Trainer has placed it: where it will train
        device = torch.device("cuda", torch.cuda.current_device())
        model.to(device)
    out = []
    for i in range(0, len(seqs), batch_size):
        chunk = seqs[i:i + batch_size]
        width = max(len(p) + len(c) for p, c in chunk)
        ids = torch.full((len(chunk), width), tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        comp = torch.zeros_like(ids, dtype=torch.bool)
        for j, (p, c) in enumerate(chunk):
            ids[j, :len(p) + len(c)] = torch.tensor(p + c)
            mask[j, :len(p) + len(c)] = 1
            comp[j, len(p):len(p) + len(c)] = True
        ids, mask, comp = ids.to(device), mask.to(device), comp.to(device)
        logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
        lp = torch.log_softmax(logits, -1).gather(-1, ids[:, 1:, None])[..., 0]
        out.append((lp * comp[:, 1:]).sum(1).cpu())
    model.train(was_training)
    return torch.cat(out).view(-1, 2)


def preference_accuracy(logps: torch.Tensor) -> float:
    """Fraction of pairs whose chosen completion is more likely than the rejected one."""
    return float((logps[:, 0] > logps[:, 1]).float().mean()) if len(logps) else float("nan")


def reward_accuracy(logps: torch.Tensor, ref_logps: torch.Tensor) -> float:
    """DPO implicit-reward accuracy: log-ratio to the reference larger for chosen than for rejected."""
    ratio = logps - ref_logps
    return float((ratio[:, 0] > ratio[:, 1]).float().mean()) if len(logps) else float("nan")


# ---------------------------------------------------------------------------------------------- the stage

def run_dpo(stage, model, tokenizer, stage_dir: Path, recipe, metrics_path: Path,
            resume_from: str | None = None) -> dict:
    """Train `model` with DPO on the stage's preference pairs; returns final metrics (+ accuracy before/after)."""
    from datasets import Dataset
    from trl import DPOConfig

    rows = preference_rows(stage, recipe.seed)
    train_rows, eval_rows = split_rows(rows, stage.eval_fraction)
    check_packing(model, stage.packing)
    model.config.use_cache = False
    before = completion_logps(model, tokenizer, eval_rows) if eval_rows else None

    peft = peft_config(stage.peft, model)
    ref_model = None
    if stage.reference == "copy" and not stage.precompute_ref_log_probs:
        ref_model = copy.deepcopy(model).eval()
        ref_model.requires_grad_(False)
    args = DPOConfig(
        **trainer_kwargs(stage.optim, stage_dir / "checkpoints", recipe.seed),
        max_length=stage.data.max_length,
        beta=stage.beta,
        loss_type=trl_loss_type(stage),
        ld_alpha=stage.ld_alpha,
        label_smoothing=stage.label_smoothing,
        precompute_ref_log_probs=stage.precompute_ref_log_probs,
        gradient_checkpointing_kwargs={"use_reentrant": False} if stage.optim.gradient_checkpointing else None,
        include_num_input_tokens_seen=True,
    )
    trainer_cls = make_dpo_trainer_class()
    trainer = trainer_cls(model=model, ref_model=ref_model, args=args, train_dataset=Dataset.from_list(train_rows),
                          processing_class=tokenizer, peft_config=peft,
                          callbacks=[MetricsCallback(metrics_path, "dpo")], pack=stage.packing,
                          max_prompt_length=stage.max_prompt_length)
    out = trainer.train(resume_from_checkpoint=resume_from)
    trained = trained_model(trainer, stage)
    _unwrap_forward(trained)
    result = {"model": trained, "train_loss": out.training_loss, "steps": out.global_step,
              "tokens": int(trainer.state.num_input_tokens_seen or trainer._total_train_tokens or 0),
              "pairs": len(train_rows), "loss_type": args.loss_type[0]}
    if eval_rows:
        after = completion_logps(trained, tokenizer, eval_rows)
        result.update(heldout_pairs=len(eval_rows), pref_acc_before=preference_accuracy(before),
                      pref_acc_after=preference_accuracy(after), reward_acc_after=reward_accuracy(after, before))
        if trainer.is_world_process_zero():
            from hybrid_posttrain.data.io import append_jsonl

            append_jsonl(metrics_path, {"stage": "dpo", "step": out.global_step, "event": "heldout",
                                        **{k: v for k, v in result.items() if k != "model"}})
    return result


def _unwrap_forward(model: torch.nn.Module) -> None:
    """Drop the instance-level forward patches (TRL's fused head, our packing) so later stages and
    `save_pretrained` see the class forward again."""
    for m in (model, _inner_model(model)):
        if "forward" in vars(m):
            del m.forward
        if getattr(m, PACKED_ATTR, False):
            setattr(m, PACKED_ATTR, False)


__all__ = ["run_dpo", "pack_forward", "pack_padded", "unpack_shifted", "make_dpo_trainer_class",
           "completion_logps", "preference_accuracy", "reward_accuracy", "trl_loss_type"]
