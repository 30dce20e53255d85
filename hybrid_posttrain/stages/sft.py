"""The SFT stage: a recipe's `sft` block -> TRL `SFTConfig` + `SFTTrainer`.

Chat rows train with assistant-only loss (the shipped chat template marks assistant turns with
`{% generation %}`); plain `text` rows train on every token (base training on the toyworld corpus).
Packing uses TRL's best-fit-decreasing packer in padding-free mode: the collator passes `position_ids`,
`cu_seq_lens_q` and `seq_idx`, and `models/hybrid.py` makes them reach every GDN layer and its short
convolution. A model whose recurrent layers cannot take boundaries is refused (`check_packing`).
"""

from __future__ import annotations

from pathlib import Path

from hybrid_posttrain.data.sources import load_rows
from hybrid_posttrain.stages.common import (
    MetricsCallback,
    check_packing,
    peft_config,
    trained_model,
    trainer_kwargs,
)


def build_sft_dataset(stage, seed: int):
    from datasets import Dataset

    rows = load_rows(stage.data.train, "sft", stage.data.toyworld, seed, stage.data.max_samples)
    keep = "messages" if "messages" in rows[0] else "text"
    return Dataset.from_list([{keep: r[keep]} for r in rows]), keep


def run_sft(stage, model, tokenizer, stage_dir: Path, recipe, metrics_path: Path, resume: bool = False,
            resume_from: str | None = None) -> dict:
    """Train `model` in place on the stage's data; returns final metrics (train_loss, tokens...)."""
    from trl import SFTConfig, SFTTrainer

    dataset, field = build_sft_dataset(stage, recipe.seed)
    check_packing(model, stage.packing)
    model.config.use_cache = False
    args = SFTConfig(
        **trainer_kwargs(stage.optim, stage_dir / "checkpoints", recipe.seed),
        max_length=stage.data.max_length,
        packing=stage.packing,
        packing_strategy="bfd",
        assistant_only_loss=stage.assistant_only_loss and field == "messages",
        dataset_text_field="text",
        include_num_input_tokens_seen=True,
        shuffle_dataset=True,
    )
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                         peft_config=peft_config(stage.peft, model),
                         callbacks=[MetricsCallback(metrics_path, "sft")])
    out = trainer.train(resume_from_checkpoint=resume_from)
    trained = trained_model(trainer, stage)
    return {"model": trained, "train_loss": out.training_loss, "steps": out.global_step,
            "tokens": int(trainer.state.num_input_tokens_seen or 0), "rows": len(dataset)}
