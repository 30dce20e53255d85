"""The RL stage: GRPO with verifiable rewards, a recipe's `rl` block -> TRL `GRPOConfig` + `GRPOTrainer`.

Rewards: `stage.reward` names a verifier of `tasks/verifiers.py` (`exact`, `numeric`, `math`, `program`), the
same function that filters teacher data and grades evals; a completion scores 1.0 when it verifies against the
row's `answer` (and, for `program`, the program in the prompt), else 0.0. Prompts: `toyworld:prompts` or a JSONL
file of `{"prompt", "answer"}` rows.

Rollouts:
* `rollout: hf` (any machine): `model.generate` with a cache (recurrent decode for the GDN layers). TRL's own
  HF path returns no log-probs, so `HybridGRPOTrainer` generates with `output_logits` and hands TRL the rollout
  log-prob of every sampled token. TRL's rollout-vs-trainer machinery (importance-sampling ratios, their
  truncation or masking, its `sampling/*` metrics) then runs for HF rollouts exactly as for vLLM.
* `rollout: vllm` (GPU): TRL's vLLM integration, colocated or a server. Hybrids need engine settings that TRL
  does not pass: `hybrid_engine_kwargs()` takes them from the vLLM generation backend's `engine_kwargs` (fp32
  recurrent-state cache, cascade attention off, no prefix caching of recurrent state, eager mode where the
  engine needs it) and injects them into the colocated `vllm.LLM`; in server mode the same settings are printed
  as `vllm serve` flags (`hybrid_serve_flags()`).

Agreement: every step logs `agreement/logprob_abs_diff_mean` and `agreement/logprob_abs_diff_max` (rollout
token log-prob vs the trainer's, over completion tokens), and the importance-sampling correction in use
(`importance_sampling`: none | token_truncate | token_mask | sequence_truncate | sequence_mask, with
`importance_sampling_cap`), plus TRL's ratio statistics when a correction is applied.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import warnings
from pathlib import Path

import torch

from hybrid_posttrain.data.io import append_jsonl
from hybrid_posttrain.data.sources import load_rows
from hybrid_posttrain.errors import UserError
from hybrid_posttrain.stages.agreement import logprob_agreement, token_logprobs
from hybrid_posttrain.stages.common import MetricsCallback, peft_config, trained_model, trainer_kwargs

# the engine settings of `generation/vllm.py:engine_kwargs` that make vLLM safe for hybrid models
# the gold answer's column (the first present); hub RL sets often call it `solution` or `ground_truth`
ANSWER_KEYS = ("answer", "solution", "ground_truth")
HYBRID_ENGINE_KEYS = ("mamba_ssm_cache_dtype", "disable_cascade_attn", "enable_prefix_caching", "enforce_eager")


# ------------------------------------------------------------------------------------------------ rewards

def _text(x) -> str:
    if isinstance(x, list):  # chat messages: the last one
        return str(x[-1].get("content", "")) if x else ""
    return str(x)


def _prompt_text(x) -> str:
    if isinstance(x, list):  # the last user turn
        users = [m for m in x if m.get("role") == "user"]
        return str((users or x)[-1].get("content", ""))
    return str(x)


def make_reward_fn(name: str):
    """A TRL reward function from the verifier called `name` (UserError when there is none)."""
    from hybrid_posttrain.tasks.verifiers import get_verifier

    try:
        verify = get_verifier(name)
    except KeyError as e:
        raise UserError(f"reward: {e.args[0]}") from None
    warned = []

    def reward(prompts, completions, answer=None, **kwargs) -> list[float]:
        out = []
        for i, (p, c) in enumerate(zip(prompts, completions)):
            gold = "" if answer is None or answer[i] is None else str(answer[i])
            try:
                ok = verify(_text(c), gold, _prompt_text(p))
            except Exception as e:  # a prompt this verifier cannot read scores 0, once warned
                if not warned:
                    warnings.warn(f"reward {name!r} failed on a prompt ({e}); scoring such prompts 0", stacklevel=2)
                    warned.append(True)
                ok = False
            out.append(1.0 if ok else 0.0)
        return out

    reward.__name__ = f"reward_{name}"
    return reward


def prompt_dataset(stage, seed: int):
    from datasets import Dataset

    rows = load_rows(stage.data.train, "prompts", stage.data.toyworld, seed, stage.data.max_samples)
    if not rows:
        raise UserError(f"{stage.data.train}: no prompt rows")
    if "prompt" not in rows[0]:
        raise UserError(f"{stage.data.train}: RL rows need a `prompt` column (found {', '.join(rows[0])})")
    gold = next((k for k in ANSWER_KEYS if k in rows[0]), None)
    return Dataset.from_list([{"prompt": r["prompt"], "answer": str(r.get(gold, "")) if gold else ""}
                              for r in rows])


# --------------------------------------------------------------------------------------------------- vLLM

def hybrid_engine_kwargs(vllm_version: str | None = None) -> dict:
    """The hybrid-safe vLLM engine settings (one definition, shared with the vllm generation backend)."""
    from hybrid_posttrain.generation.vllm import engine_kwargs

    if vllm_version is None:
        with contextlib.suppress(ImportError):
            import vllm

            vllm_version = vllm.__version__
    kw = engine_kwargs("model", vllm_version=vllm_version)
    return {k: kw[k] for k in HYBRID_ENGINE_KEYS}


def hybrid_serve_flags(vllm_version: str | None = None) -> list[str]:
    """The same settings as `vllm serve` flags (server mode: start the server with these)."""
    flags = []
    for k, v in hybrid_engine_kwargs(vllm_version).items():
        opt = "--" + k.replace("_", "-")
        if isinstance(v, bool):
            flags.append(opt if v else "--no-" + k.replace("_", "-"))
        else:
            flags += [opt, str(v)]
    return flags


@contextlib.contextmanager
def hybrid_vllm_engine():
    """While TRL builds its colocated `vllm.LLM`, add the hybrid engine settings to its arguments."""
    import trl.generation.vllm_generation as vg

    from hybrid_posttrain.generation.vllm import supported_kwargs

    original = vg.LLM  # imported there from vllm when vLLM is installed

    @functools.wraps(original)
    def llm(*args, **kwargs):
        try:
            from vllm import EngineArgs
        except ImportError:  # no vLLM to ask which options it knows: pass them all
            EngineArgs = None  # noqa: N806
        kwargs.update(supported_kwargs(hybrid_engine_kwargs(), EngineArgs))
        return original(*args, **kwargs)

    vg.LLM = llm
    try:
        yield
    finally:
        vg.LLM = original


# ------------------------------------------------------------------------------------------------ trainer

def make_grpo_trainer_class():
    """`HybridGRPOTrainer`: TRL's GRPOTrainer with rollout log-probs on the HF path and the agreement metric."""
    from transformers import Trainer
    from trl import GRPOTrainer
    from trl.models import unwrap_model_for_generation
    from trl.trainer.utils import pad

    class HybridGRPOTrainer(GRPOTrainer):
        def __init__(self, *args, is_mode: str = "none", is_cap: float | None = None, **kwargs):
            super().__init__(*args, **kwargs)
            self.hf_rollout = not self.use_vllm
            self.is_mode, self.is_cap = is_mode, is_cap
            # temperature of the rollout log-probs; None = the sampling temperature (tests mismatch it on purpose)
            self.rollout_logprob_temperature: float | None = None
            if self.hf_rollout and self.vllm_importance_sampling_correction:
                # TRL applies its rollout-vs-trainer correction under `use_vllm`; HF rollouts now bring their
                # own log-probs, so the same code path serves them (generation stays ours, below)
                self.use_vllm = True

        def _generate_single_turn(self, prompt_ids, images, multimodal_fields, num_generations,
                                  has_tool_images=False):
            if not self.hf_rollout or images is not None or multimodal_fields:
                return super()._generate_single_turn(prompt_ids, images, multimodal_fields, num_generations,
                                                     has_tool_images)
            pad_id = self._tokenizer.pad_token_id
            tensors = [torch.tensor(ids) for ids in prompt_ids]
            inputs = {"input_ids": pad(tensors, padding_value=pad_id, padding_side="left"),
                      "attention_mask": pad([torch.ones_like(t) for t in tensors], padding_value=0,
                                            padding_side="left")}
            inputs = Trainer._prepare_inputs(self, inputs)
            with (unwrap_model_for_generation(self.model_wrapped, self.accelerator,
                                              gather_deepspeed3_params=self.args.ds3_gather_for_generation,
                                              generation_kwargs=self.generation_kwargs,
                                              gradient_checkpointing_kwargs=self.args.gradient_checkpointing_kwargs)
                  as unwrapped, torch.no_grad(), self._dist.summon_full_params(self.model_wrapped, recurse=False)):
                config = copy.deepcopy(self.generation_config)
                config.return_dict_in_generate, config.output_logits = True, True
                out = unwrapped.generate(**inputs, generation_config=config)
            completion = out.sequences[:, inputs["input_ids"].size(1):]
            logits = torch.stack(out.logits, dim=1)[:, :completion.size(1)]
            logps = token_logprobs(logits, completion, self.rollout_logprob_temperature or self.temperature)
            eos = torch.tensor(self.eos_token_ids, device=completion.device)
            is_eos = torch.isin(completion, eos)
            ends = torch.where(is_eos.any(1), is_eos.int().argmax(1), torch.full_like(is_eos[:, 0], completion.size(1),
                                                                                       dtype=torch.long))
            ids, lps = [], []
            for row, lp, end in zip(completion.cpu(), logps.cpu(), ends.cpu()):
                n = int(end) + 1
                ids.append(row[:n].tolist())
                lps.append(lp[:n].tolist())
            return ids, lps

        def _generate_and_score_completions(self, inputs):
            out = super()._generate_and_score_completions(inputs)
            mode = "train" if self.model.training else "eval"
            rollout = out.get("sampling_per_token_logps")
            if rollout is not None:
                trainer_lp = out.get("old_per_token_logps")
                if trainer_lp is None:  # TRL skipped it (on-policy, no correction): compute it for the metric
                    ids = torch.cat([out["prompt_ids"], out["completion_ids"]], dim=1)
                    mask = torch.cat([out["prompt_mask"], out["completion_mask"]], dim=1)
                    with torch.no_grad():
                        trainer_lp, _, _ = self._get_per_token_logps_and_entropies(
                            self.model, ids, mask, out["completion_ids"].size(1),
                            batch_size=self.args.per_device_train_batch_size)
                mask = out["completion_mask"] * out["tool_mask"] if "tool_mask" in out else out["completion_mask"]
                stats = logprob_agreement(rollout, trainer_lp, mask)
                device = self.accelerator.device
                mean = self.accelerator.gather(torch.tensor(stats["mean"], device=device)).mean().item()
                mx = self.accelerator.gather(torch.tensor(stats["max"], device=device)).max().item()
                self._metrics[mode]["agreement/logprob_abs_diff_mean"].append(mean)
                self._metrics[mode]["agreement/logprob_abs_diff_max"].append(mx)
            return out

        def log(self, logs: dict, start_time: float | None = None) -> None:
            if "loss" in logs or any(k.startswith("reward") for k in logs):
                logs["importance_sampling"] = self.is_mode
                if self.is_cap is not None and self.is_mode != "none":
                    logs["importance_sampling_cap"] = self.is_cap
            super().log(logs, start_time)

    return HybridGRPOTrainer


# ---------------------------------------------------------------------------------------------- the stage

def _rollout_model_path(model, stage_dir: Path) -> None:
    """vLLM colocate loads the weights from `model.name_or_path`; save an in-memory (preset) model first."""
    name = getattr(model, "name_or_path", "") or ""
    if name and (Path(name).exists() or "/" in name):
        return
    path = stage_dir / "rollout_init"
    model.save_pretrained(path)
    model.config._name_or_path = str(path)


def grpo_config(stage, stage_dir: Path, seed: int):
    from trl import GRPOConfig

    is_on = stage.importance_sampling != "none"
    return GRPOConfig(
        **trainer_kwargs(stage.optim, stage_dir / "checkpoints", seed),
        num_generations=stage.num_generations,
        max_completion_length=stage.max_new_tokens,
        temperature=stage.temperature,
        beta=stage.beta,
        loss_type=stage.loss_type,
        epsilon=stage.epsilon,
        num_iterations=stage.num_iterations,
        scale_rewards=stage.scale_rewards,
        mask_truncated_completions=stage.mask_truncated_completions,
        importance_sampling_level=stage.importance_sampling_level,
        use_vllm=stage.rollout == "vllm",
        vllm_mode=stage.vllm_mode,
        vllm_server_base_url=stage.vllm_server_url,
        vllm_gpu_memory_utilization=stage.vllm_gpu_memory_utilization,
        vllm_importance_sampling_correction=is_on,
        vllm_importance_sampling_mode=stage.importance_sampling if is_on else "token_truncate",
        vllm_importance_sampling_clip_max=stage.importance_sampling_cap,
        shuffle_dataset=True,
        log_completions=False,
    )


def run_rl(stage, model, tokenizer, stage_dir: Path, recipe, metrics_path: Path,
           resume_from: str | None = None) -> dict:
    """Train `model` with GRPO on the stage's prompts; returns final metrics (reward first/last steps...)."""
    reward = make_reward_fn(stage.reward)
    dataset = prompt_dataset(stage, recipe.seed)
    if stage.rollout == "vllm":
        if not torch.cuda.is_available():
            raise UserError("rollout: vllm needs a CUDA GPU; use rollout: hf on this machine")
        if stage.vllm_mode == "colocate":
            _rollout_model_path(model, stage_dir)
        else:
            print("vLLM server mode: start the server with the hybrid settings, e.g.\n  VLLM_SERVER_DEV_MODE=1 "
                  f"trl vllm-serve --model {model.name_or_path} -- {' '.join(hybrid_serve_flags())}")
    model.config.use_cache = False
    args = grpo_config(stage, stage_dir, recipe.seed)
    if tokenizer.padding_side != "left":
        tokenizer.padding_side = "left"
    cls = make_grpo_trainer_class()
    engine = hybrid_vllm_engine() if stage.rollout == "vllm" and stage.vllm_mode == "colocate" \
        else contextlib.nullcontext()
    with engine:
        trainer = cls(model=model, reward_funcs=[reward], args=args, train_dataset=dataset,
                      processing_class=tokenizer, peft_config=peft_config(stage.peft, model),
                      callbacks=[MetricsCallback(metrics_path, "rl")], is_mode=stage.importance_sampling,
                      is_cap=stage.importance_sampling_cap)
    out = trainer.train(resume_from_checkpoint=resume_from)
    trained = trained_model(trainer, stage)
    rewards = [h["reward"] for h in trainer.state.log_history if h.get("reward") is not None]
    agree = [h for h in trainer.state.log_history if "agreement/logprob_abs_diff_mean" in h]
    k = max(1, len(rewards) // 4)
    result = {"model": trained, "train_loss": out.training_loss, "steps": out.global_step,
              "tokens": int(trainer.state.num_input_tokens_seen or 0), "prompts": len(dataset),
              "reward_first": sum(rewards[:k]) / k if rewards else None,
              "reward_last": sum(rewards[-k:]) / k if rewards else None,
              "importance_sampling": stage.importance_sampling}
    if agree:
        result["agreement_mean"] = sum(h["agreement/logprob_abs_diff_mean"] for h in agree) / len(agree)
        result["agreement_max"] = max(h["agreement/logprob_abs_diff_max"] for h in agree)
    if trainer.is_world_process_zero():
        append_jsonl(metrics_path, {"stage": "rl", "step": out.global_step, "event": "summary",
                                    **{k: v for k, v in result.items() if k != "model"}})
    return result
