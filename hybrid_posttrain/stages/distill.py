"""The distill stage: a recipe's `distill` block -> logit distillation or TRL on-policy distillation.

`mode: logit` trains on teacher samples that carry the teacher's top-k log-probs (captured by
`hpt generate` with an hf or vllm teacher and `sampling.top_logprobs: k`; `data.train` is that
teacher's `sft.jsonl` or its folder). The completion is the teacher's own token ids (the tokenizers must
match), the prompt is re-encoded with the student's chat template. `TopKDistillTrainer` is a
`transformers.Trainer` whose `compute_loss` is a divergence over the teacher's top-k support at every
completion position:

* `forward_kl`: sum_k p_t(k) (log p_t(k) - log q(k)), p_t the teacher renormalised over its top k and
  q the student's full-vocabulary distribution (mass the student puts outside the support is penalised).
* `jsd` (generalised JSD in TRL's convention): with p_t and the student q both renormalised over the
  support, beta = 0 is KL(p_t || q), beta = 1 is KL(q || p_t), otherwise
  beta KL(p_t || m) + (1 - beta) KL(q || m) with the mixture m = (1 - beta) q + beta p_t.
Both at `temperature` T (teacher log-probs and student logits divided by T, loss scaled by T^2).

`mode: on_policy` is TRL's `DistillationTrainer` (on-policy distillation, Agarwal et al. 2024): the
student samples completions of the prompts, the live teacher (`teacher:`) scores them, and the student
minimises the generalised JSD (`jsd_beta`; `forward_kl` means beta = 0) to the teacher's full
distribution. Prompts come from `data.train`: rows with `prompt` (string or chat), chat `messages`
(the trailing assistant turn is dropped), or a `toyworld:prompts` source.

`run_distill(stage, model, tokenizer, stage_dir, recipe, metrics_path, resume_from)` trains `model`,
writes checkpoints under `stage_dir/checkpoints`, and returns the trained model with its final metrics
(for `logit` also `kl_before` / `kl_after`: the stage's divergence on the first rows, before and after).
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import Trainer, TrainingArguments

from hybrid_posttrain.data.io import read_jsonl
from hybrid_posttrain.errors import UserError
from hybrid_posttrain.stages.common import MetricsCallback, peft_config, trained_model, trainer_kwargs

# ------------------------------------------------------------------------------------------- the losses


def topk_divergence(student_logits: torch.Tensor, top_ids: torch.Tensor, top_lps: torch.Tensor,
                    top_mask: torch.Tensor, loss: str = "forward_kl", beta: float = 0.5,
                    temperature: float = 1.0) -> torch.Tensor:
    """Per-position divergence [N] between the teacher's top-k and the student.

    student_logits [N, V]; top_ids, top_lps, top_mask [N, K] (mask False for padding slots).
    """
    neg = torch.finfo(torch.float32).min
    s_full = torch.log_softmax(student_logits.float() / temperature, dim=-1)
    s_k = s_full.gather(-1, top_ids.clamp(min=0))
    t = torch.log_softmax((top_lps.float() / temperature).masked_fill(~top_mask, neg), dim=-1)
    p_t = t.exp() * top_mask
    if loss == "forward_kl":
        div = (p_t * (t - s_k)).masked_fill(~top_mask, 0.0).sum(-1)
    else:
        s = torch.log_softmax(s_k.masked_fill(~top_mask, neg), dim=-1)
        q = s.exp() * top_mask
        if beta == 0.0:
            div = (p_t * (t - s)).masked_fill(~top_mask, 0.0).sum(-1)
        elif beta == 1.0:
            div = (q * (s - t)).masked_fill(~top_mask, 0.0).sum(-1)
        else:
            m = torch.logsumexp(torch.stack([s + torch.log(torch.tensor(1 - beta)),
                                             t + torch.log(torch.tensor(beta))]), dim=0)
            kl_t = (p_t * (t - m)).masked_fill(~top_mask, 0.0).sum(-1)
            kl_s = (q * (s - m)).masked_fill(~top_mask, 0.0).sum(-1)
            div = beta * kl_t + (1 - beta) * kl_s
    return div * temperature ** 2


# ------------------------------------------------------------------------------------------- logit data

def _rows_path(train: str) -> Path:
    p = Path(train)
    if p.is_dir():
        p = p / "sft.jsonl"
    if not p.exists():
        raise UserError(f"distill data {train!r}: no such file (give a teacher's sft.jsonl from hpt generate, or "
                        f"its folder)", train, 1)
    return p


def build_logit_features(path: Path, tokenizer, max_length: int, vocab_size: int,
                         max_samples: int | None = None) -> list[dict]:
    """Token-level features: prompt (student chat template) + teacher completion ids, aligned top-k."""
    rows = read_jsonl(path, required=("messages",))
    feats = []
    for i, r in enumerate(rows, start=1):
        if "teacher_top_logprobs" not in r or "teacher_token_ids" not in r:
            raise UserError("row has no teacher_top_logprobs: logit distillation needs a teacher run with "
                            "sampling.top_logprobs > 0 on the hf or vllm backend", str(path), i)
        msgs = r["messages"]
        if msgs[-1]["role"] != "assistant":
            raise UserError("the last turn of `messages` must be the teacher's assistant completion", str(path), i)
        prompt = tokenizer.apply_chat_template(msgs[:-1], add_generation_prompt=True, tokenize=False)
        p_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        c_ids = [int(t) for t in r["teacher_token_ids"]]
        tops = r["teacher_top_logprobs"]
        if len(tops) != len(c_ids):
            raise UserError(f"teacher_top_logprobs has {len(tops)} steps for {len(c_ids)} tokens", str(path), i)
        hi = max([max(c_ids, default=0)] + [int(t) for step in tops for t, _ in step])
        if hi >= vocab_size:
            raise UserError(f"teacher token id {hi} is outside the student's vocabulary ({vocab_size}): logit "
                            f"distillation needs the teacher's tokenizer", str(path), i)
        keep = max(0, min(len(c_ids), max_length - len(p_ids)))
        if keep == 0:
            continue
        feats.append(dict(prompt_ids=p_ids, completion_ids=c_ids[:keep], top=tops[:keep]))
        if max_samples is not None and len(feats) >= max_samples:
            break
    if not feats:
        raise UserError("no usable rows (prompts longer than data.max_length?)", str(path), 1)
    return feats


class TopKCollator:
    """Right-padded batch: input_ids, attention_mask, labels (-100 off the completion), and the teacher's
    top-k ids / log-probs / mask aligned with the label positions ([B, T, K])."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, feats: list[dict]) -> dict:
        T = max(len(f["prompt_ids"]) + len(f["completion_ids"]) for f in feats)
        K = max(len(step) for f in feats for step in f["top"])
        B = len(feats)
        ids = torch.full((B, T), self.pad_id, dtype=torch.long)
        att = torch.zeros((B, T), dtype=torch.long)
        labels = torch.full((B, T), -100, dtype=torch.long)
        t_ids = torch.zeros((B, T, K), dtype=torch.long)
        t_lps = torch.zeros((B, T, K), dtype=torch.float32)
        t_mask = torch.zeros((B, T, K), dtype=torch.bool)
        for b, f in enumerate(feats):
            p, c = f["prompt_ids"], f["completion_ids"]
            n = len(p) + len(c)
            ids[b, :n] = torch.tensor(p + c)
            att[b, :n] = 1
            labels[b, len(p):n] = torch.tensor(c)
            for j, step in enumerate(f["top"]):
                pos = len(p) + j
                for k, (tid, lp) in enumerate(step):
                    t_ids[b, pos, k] = int(tid)
                    t_lps[b, pos, k] = float(lp)
                    t_mask[b, pos, k] = True
        return dict(input_ids=ids, attention_mask=att, labels=labels, teacher_top_ids=t_ids,
                    teacher_top_logprobs=t_lps, teacher_top_mask=t_mask)


def batch_divergence(model, batch: dict, loss: str, beta: float, temperature: float) -> tuple[torch.Tensor, int]:
    """(sum of per-token divergences, number of completion tokens) for one collated batch."""
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    logits = out.logits[:, :-1]
    sel = batch["labels"][:, 1:] != -100
    div = topk_divergence(logits[sel], batch["teacher_top_ids"][:, 1:][sel], batch["teacher_top_logprobs"][:, 1:][sel],
                          batch["teacher_top_mask"][:, 1:][sel], loss, beta, temperature)
    return div.sum(), int(sel.sum())


class TopKDistillTrainer(Trainer):
    """A `transformers.Trainer` whose loss is the top-k divergence to the teacher (see the module docstring)."""

    def __init__(self, *args, distill_loss: str = "forward_kl", beta: float = 0.5, temperature: float = 1.0,
                 **kwargs):
        super().__init__(*args, **kwargs)
        self.distill_loss, self.beta, self.temperature = distill_loss, beta, temperature
        # we normalise by the number of completion tokens in the accumulated batch ourselves
        self.model_accepts_loss_kwargs = True

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        total, n = batch_divergence(model, inputs, self.distill_loss, self.beta, self.temperature)
        if num_items_in_batch is not None:
            denom = num_items_in_batch.to(total.device) if torch.is_tensor(num_items_in_batch) else num_items_in_batch
            # Trainer counts label tokens across processes; DDP averages gradients over them
            loss = total / denom * self.accelerator.num_processes
        else:
            loss = total / max(n, 1)
        return (loss, None) if return_outputs else loss


@torch.no_grad()
def mean_divergence(model, feats: list[dict], collator, loss: str, beta: float, temperature: float,
                    batch_size: int = 8) -> float:
    """Mean per-token divergence of `model` to the teacher over `feats` (eval mode)."""
    was_training = model.training
    model.eval()
    dev = next(model.parameters()).device
    total, n = 0.0, 0
    for i in range(0, len(feats), batch_size):
        batch = {k: v.to(dev) for k, v in collator(feats[i:i + batch_size]).items()}
        s, c = batch_divergence(model, batch, loss, beta, temperature)
        total += float(s)
        n += c
    model.train(was_training)
    return total / max(n, 1)


def _run_logit(stage, model, tokenizer, stage_dir: Path, recipe, metrics_path, resume_from) -> dict:
    from datasets import Dataset

    feats = build_logit_features(_rows_path(stage.data.train), tokenizer, stage.data.max_length,
                                 model.get_output_embeddings().weight.shape[0], stage.data.max_samples)
    collator = TopKCollator(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0)
    beta = 0.0 if stage.loss == "forward_kl" else stage.jsd_beta
    probe = feats[: min(len(feats), 64)]
    kl_before = mean_divergence(model, probe, collator, stage.loss, beta, stage.temperature)
    model.config.use_cache = False
    args = TrainingArguments(**trainer_kwargs(stage.optim, stage_dir / "checkpoints", recipe.seed),
                             remove_unused_columns=False, label_names=["labels"])
    peft = peft_config(stage.peft, model)
    if peft is not None:
        from peft import get_peft_model

        model = get_peft_model(model, peft)
    trainer = TopKDistillTrainer(model=model, args=args, train_dataset=Dataset.from_list(feats), data_collator=collator,
                                 processing_class=tokenizer, distill_loss=stage.loss, beta=beta,
                                 temperature=stage.temperature,
                                 callbacks=[MetricsCallback(Path(metrics_path), "distill")] if metrics_path else [])
    out = trainer.train(resume_from_checkpoint=resume_from)
    trained = trained_model(trainer, stage)
    kl_after = mean_divergence(trained, probe, collator, stage.loss, beta, stage.temperature)
    mean_len = sum(len(f["prompt_ids"]) + len(f["completion_ids"]) for f in feats) / len(feats)
    seen = out.global_step * stage.optim.per_device_batch_size * stage.optim.grad_accum * args.world_size
    return {"model": trained, "train_loss": out.training_loss, "steps": out.global_step, "rows": len(feats),
            "kl_before": kl_before, "kl_after": kl_after, "tokens": int(mean_len * seen)}


# ----------------------------------------------------------------------------------------------- on-policy

def prompt_rows(stage, seed: int) -> list[dict]:
    """`{"prompt": chat}` rows for on-policy distillation."""
    src = stage.data.train
    if src.startswith(("toyworld:", "hf:")):
        from hybrid_posttrain.data.sources import load_rows

        rows = load_rows(src, "prompts", stage.data.toyworld, seed, stage.data.max_samples)
        return [{"prompt": r["prompt"] if isinstance(r["prompt"], list) else [{"role": "user", "content": r["prompt"]}]}
                for r in rows]
    path = Path(src)
    if path.is_dir():
        path = path / "sft.jsonl"
    out = []
    for i, r in enumerate(read_jsonl(path), start=1):
        if "prompt" in r:
            p = r["prompt"]
            out.append({"prompt": p if isinstance(p, list) else [{"role": "user", "content": str(p)}]})
        elif "messages" in r:
            msgs = list(r["messages"])
            while msgs and msgs[-1]["role"] == "assistant":
                msgs.pop()
            if not msgs:
                raise UserError("`messages` holds no prompt turn", str(path), i)
            out.append({"prompt": msgs})
        else:
            raise UserError("on-policy distillation rows need `prompt` or `messages`", str(path), i)
        if stage.data.max_samples is not None and len(out) >= stage.data.max_samples:
            break
    return out


def _run_on_policy(stage, model, tokenizer, stage_dir: Path, recipe, metrics_path, resume_from) -> dict:
    from datasets import Dataset
    from trl import DistillationConfig, DistillationTrainer

    from hybrid_posttrain.models import load_model

    if not stage.teacher:
        raise UserError("a distill stage with mode: on_policy needs `teacher:` (a model path, hub id or preset)")
    teacher, _ = load_model(stage.teacher, dtype=recipe.model.dtype, kernels=recipe.model.kernels,
                            with_tokenizer=False, seed=recipe.seed + 1)
    if teacher.get_output_embeddings().weight.shape[0] != model.get_output_embeddings().weight.shape[0]:
        raise UserError(f"teacher {stage.teacher!r} and the student have different vocabularies; on-policy "
                        f"distillation needs a shared tokenizer")
    teacher.to(next(model.parameters()).device)
    beta = 0.0 if stage.loss == "forward_kl" else stage.jsd_beta
    kw = trainer_kwargs(stage.optim, stage_dir / "checkpoints", recipe.seed)
    args = DistillationConfig(**kw, max_completion_length=stage.max_new_tokens, temperature=stage.temperature,
                              beta=beta, shuffle_dataset=True)
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"  # the trainer generates from left-padded prompts
    try:
        trainer = DistillationTrainer(model=model, teacher_model=teacher, args=args,
                                      train_dataset=Dataset.from_list(prompt_rows(stage, recipe.seed)),
                                      processing_class=tokenizer, peft_config=peft_config(stage.peft, model),
                                      callbacks=[MetricsCallback(Path(metrics_path), "distill")] if metrics_path else [])
        out = trainer.train(resume_from_checkpoint=resume_from)
    finally:
        tokenizer.padding_side = side
    trained = trained_model(trainer, stage)
    return {"model": trained, "train_loss": out.training_loss, "steps": out.global_step,
            "tokens": int(trainer.state.num_input_tokens_seen or 0)}


def run_distill(stage, model, tokenizer, stage_dir: Path, recipe, metrics_path: Path | None = None,
                resume_from: str | None = None) -> dict:
    """Distil into `model` (see the module docstring); returns the trained model and final metrics."""
    stage_dir = Path(stage_dir)
    if stage.mode == "logit":
        return _run_logit(stage, model, tokenizer, stage_dir, recipe, metrics_path, resume_from)
    return _run_on_policy(stage, model, tokenizer, stage_dir, recipe, metrics_path, resume_from)
