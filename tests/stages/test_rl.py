"""RL stage (GRPO through TRL) on CPU with HF rollouts.

* From a briefly SFT-trained tiny-hybrid student (terse answers to toyworld programs), GRPO with the `program`
  verifier as reward raises the mean reward of the last steps above that of the first steps, and the sampled
  reward on a fixed set of prompts by more than 0.02; every trainable parameter changes; the agreement metric
  is logged every step.
* The agreement metric: tiny on matched rollouts (HF cached decode vs the trainer's chunked forward), and it
  rises when the rollout log-probs are deliberately taken at another temperature than the sampling one.
* Bad input: an unknown reward name is one line `file:line: ...` and exit status 2 from `hpt run`.
* The hybrid vLLM engine settings reach the colocated `vllm.LLM` that TRL builds (vLLM itself faked).
"""

import json
import subprocess
import sys

import pytest
import torch

from hybrid_posttrain.errors import UserError
from hybrid_posttrain.models import load_model
from hybrid_posttrain.recipe import Recipe
from hybrid_posttrain.stages.common import trainable_snapshot

torch.set_num_threads(1)

TERSE = {"style": "terse", "train_depths": [2], "n_per_depth": 400, "facts": False}


def _recipe(rl_optim: dict, rl_extra: dict | None = None, sft_steps: int = 150) -> Recipe:
    return Recipe.model_validate({"name": "t", "seed": 0, "stages": [
        {"type": "sft", "data": {"train": "toyworld:programs", "max_length": 64, "toyworld": TERSE},
         "optim": {"lr": 5e-3, "max_steps": sft_steps, "per_device_batch_size": 16, "logging_steps": 10,
                   "save_steps": 10000}},
        {"type": "rl", "data": {"train": "toyworld:prompts", "toyworld": TERSE},
         "optim": {"logging_steps": 1, "save_steps": 10000, **rl_optim},
         "num_generations": 8, "max_new_tokens": 8, "reward": "program", **(rl_extra or {})}]})


def _rows(path, stage="rl"):
    return [r for r in map(json.loads, path.read_text().splitlines()) if r.get("stage") == stage]


def _sampled_reward(model, tok, prompts, n=4, seed=0) -> float:
    """Mean `program` reward of n samples (temperature 1) per chat prompt through the project's HF generator,
    from a fixed seed: the same model gives the same number, so a before / after difference is RL's alone."""
    from hybrid_posttrain.generation.base import Sampling
    from hybrid_posttrain.generation.hf import HFGenerator
    from hybrid_posttrain.stages.rl import make_reward_fn

    sampling = Sampling(temperature=1.0, max_new_tokens=8, n=n, seed=seed)
    comps = HFGenerator(model, tok, batch_size=256).generate([p["prompt"] for p in prompts], sampling,
                                                              progress=False)
    scores = make_reward_fn("program")([p["prompt"] for p in prompts for _ in range(n)],
                                       [c.text for cs in comps for c in cs],
                                       answer=[p["answer"] for p in prompts for _ in range(n)])
    return sum(scores) / len(scores)


def test_grpo_reward_rises_from_sft_student(tmp_path):
    from hybrid_posttrain.stages.rl import prompt_dataset, run_rl
    from hybrid_posttrain.stages.sft import run_sft

    recipe = _recipe({"lr": 5e-4, "max_steps": 50, "per_device_batch_size": 64})
    metrics = tmp_path / "metrics.jsonl"
    model, tok = load_model("tiny-hybrid", dtype="float32", kernels="torch", seed=0)
    model = run_sft(recipe.stages[0], model, tok, tmp_path / "sft", recipe, metrics)["model"]
    # a fixed draw of the same prompt distribution (the toyworld space is small: these programs are also among
    # the 160 distinct training prompts)
    fixed = list(prompt_dataset(recipe.stages[1], seed=1).select(range(256)))
    reward_before = _sampled_reward(model, tok, fixed)
    before = trainable_snapshot(model)
    out = run_rl(recipe.stages[1], model, tok, tmp_path / "rl", recipe, metrics)
    rows = [r for r in _rows(metrics) if "reward" in r]
    rewards = [r["reward"] for r in rows]
    assert len(rewards) == 50
    # the training batches' reward climbs; each step's 64 rollouts come from other prompts, so that curve is
    # noisy (+0.05 / +0.09 over the first and last 12 steps at lr 5e-4 / 1e-3, torch 2.13 CPU): the size of
    # the gain is checked on fixed prompts, paired (1024 samples from one seed; with lr 1e-12: 0.746 both times)
    k = 12
    first, last = sum(rewards[:k]) / k, sum(rewards[-k:]) / k
    assert last > first, (first, last, rewards)
    reward_after = _sampled_reward(out["model"], tok, fixed)
    assert reward_after > reward_before + 0.02, (reward_before, reward_after)  # measured 0.746 -> 0.845
    after = dict(out["model"].named_parameters())
    unchanged = [n for n, p in before.items() if torch.equal(p, after[n].detach())]
    assert not unchanged, unchanged
    # the agreement metric and the correction in use are on every step's row
    assert all("agreement/logprob_abs_diff_mean" in r and "agreement/logprob_abs_diff_max" in r for r in rows)
    assert all(r["importance_sampling"] == "token_truncate" and r["importance_sampling_cap"] == 2.0 for r in rows)
    assert max(r["agreement/logprob_abs_diff_max"] for r in rows) < 1e-3  # same model, fp32: engines agree


def _sharp_model():
    """tiny-hybrid with a scaled-up LM head: a peaked next-token distribution, so temperature matters."""
    model, tok = load_model("tiny-hybrid", dtype="float32", kernels="torch", seed=0)
    with torch.no_grad():
        model.lm_head.weight.mul_(40.0)
    return model, tok


def _agreement_run(tmp_path, mismatch: float | None, importance_sampling: str) -> list[dict]:
    from hybrid_posttrain.stages.common import MetricsCallback
    from hybrid_posttrain.stages.rl import (
        grpo_config,
        make_grpo_trainer_class,
        make_reward_fn,
        prompt_dataset,
    )

    recipe = _recipe({"lr": 1e-4, "max_steps": 2, "per_device_batch_size": 16},
                     {"importance_sampling": importance_sampling, "max_new_tokens": 6})
    stage = recipe.stages[1]
    model, tok = _sharp_model()
    model.config.use_cache = False
    tok.padding_side = "left"
    metrics = tmp_path / f"m-{mismatch}-{importance_sampling}.jsonl"
    trainer = make_grpo_trainer_class()(
        model=model, reward_funcs=[make_reward_fn("program")], args=grpo_config(stage, tmp_path / "rl", 0),
        train_dataset=prompt_dataset(stage, 0), processing_class=tok, callbacks=[MetricsCallback(metrics, "rl")],
        is_mode=stage.importance_sampling, is_cap=stage.importance_sampling_cap)
    trainer.rollout_logprob_temperature = mismatch
    trainer.train()
    return [r for r in _rows(metrics) if "agreement/logprob_abs_diff_mean" in r]


@pytest.mark.parametrize("importance_sampling", ["token_truncate", "none"])
def test_agreement_metric_rises_with_mismatched_rollout(tmp_path, importance_sampling):
    matched = _agreement_run(tmp_path, None, importance_sampling)
    mismatched = _agreement_run(tmp_path, 2.0, importance_sampling)  # log-probs at T=2, sampled at T=1
    assert len(matched) == len(mismatched) == 2
    m_mean = max(r["agreement/logprob_abs_diff_mean"] for r in matched)
    x_mean = min(r["agreement/logprob_abs_diff_mean"] for r in mismatched)
    assert m_mean < 1e-4, matched
    assert x_mean > 0.05 and x_mean > 100 * m_mean, (m_mean, x_mean)
    assert min(r["agreement/logprob_abs_diff_max"] for r in mismatched) > x_mean
    if importance_sampling != "none":  # TRL's correction sees the same gap: ratios move away from 1
        assert all(abs(r["sampling/importance_sampling_ratio/mean"] - 1) < 1e-3 for r in matched)
        assert any(abs(r["sampling/importance_sampling_ratio/max"] - 1) > 1e-2 for r in mismatched)


def test_unknown_reward_is_one_line_exit_2(tmp_path):
    from hybrid_posttrain.stages.rl import make_reward_fn

    with pytest.raises(UserError, match="unknown verifier 'nope'"):
        make_reward_fn("nope")
    recipe = tmp_path / "rl.yaml"
    recipe.write_text("kind: recipe\nname: bad\nstages:\n  - type: rl\n    data:\n      train: toyworld:prompts\n"
                      "    reward: progam\n")
    proc = subprocess.run([sys.executable, "-m", "hybrid_posttrain.cli", "run", str(recipe), "--output-dir",
                           str(tmp_path / "run")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith(f"{recipe}:7:") and "unknown reward 'progam'" in lines[0] and "program" in lines[0]


def test_reward_fn_grades_with_the_verifier():
    from hybrid_posttrain.stages.rl import make_reward_fn

    reward = make_reward_fn("program")
    prompt = [{"role": "user", "content": "Run the program (all arithmetic mod 10): a=3; b=a+9. What is b?"}]
    got = reward([prompt, prompt], [[{"role": "assistant", "content": "b=a+9=2\nAnswer: 2"}],
                                    [{"role": "assistant", "content": "Answer: 12"}]], answer=["2", "2"])
    assert got == [1.0, 0.0]


def test_hybrid_engine_settings_reach_colocated_vllm(monkeypatch):
    import trl.generation.vllm_generation as vg

    from hybrid_posttrain.stages.rl import hybrid_engine_kwargs, hybrid_serve_flags, hybrid_vllm_engine

    kw = hybrid_engine_kwargs("0.11.0")
    assert kw["mamba_ssm_cache_dtype"] == "float32" and kw["disable_cascade_attn"] is True
    assert kw["enable_prefix_caching"] is False
    assert hybrid_engine_kwargs("0.9.0")["enforce_eager"] is True  # V0 engine needs eager for recurrent layers
    assert "--disable-cascade-attn" in hybrid_serve_flags("0.11.0")
    seen = {}
    monkeypatch.setattr(vg, "LLM", lambda **k: seen.update(k) or "engine", raising=False)
    with hybrid_vllm_engine():
        assert vg.LLM(model="m", logprobs_mode="processed_logprobs") == "engine"
    assert seen["mamba_ssm_cache_dtype"] == "float32" and seen["disable_cascade_attn"] is True
    assert seen["logprobs_mode"] == "processed_logprobs"  # TRL's own settings are kept
