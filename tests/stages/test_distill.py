"""The distill stage on tiny models (CPU): the top-k divergences against their full-vocabulary
definitions, logit distillation from `hpt generate` data (hf teacher with captured top-k log-probs), and
TRL on-policy distillation. Each lowers the KL to the teacher, the loss falls, every parameter moves."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from hybrid_posttrain.models import load_model
from hybrid_posttrain.recipe import validate_data
from hybrid_posttrain.stages.distill import run_distill, topk_divergence

# ------------------------------------------------------------------------------------------------ losses

def test_topk_losses_match_their_definitions_on_the_full_support():
    torch.manual_seed(0)
    N, V = 6, 11
    s_logits, t_logits = torch.randn(N, V) * 2, torch.randn(N, V) * 2
    ids = torch.arange(V).expand(N, V).contiguous()
    t_lp = torch.log_softmax(t_logits, -1)
    mask = torch.ones(N, V, dtype=torch.bool)
    p, q = t_lp.exp(), torch.softmax(s_logits, -1)
    lq = torch.log_softmax(s_logits, -1)
    fkl = (p * (t_lp - lq)).sum(-1)
    assert torch.allclose(topk_divergence(s_logits, ids, t_lp, mask, "forward_kl"), fkl, atol=1e-5)
    assert torch.allclose(topk_divergence(s_logits, ids, t_lp, mask, "jsd", beta=0.0), fkl, atol=1e-5)
    assert torch.allclose(topk_divergence(s_logits, ids, t_lp, mask, "jsd", beta=1.0), (q * (lq - t_lp)).sum(-1),
                          atol=1e-5)
    beta = 0.3
    m = (1 - beta) * q + beta * p  # TRL's generalised JSD mixture
    jsd = beta * (p * (p.log() - m.log())).sum(-1) + (1 - beta) * (q * (q.log() - m.log())).sum(-1)
    assert torch.allclose(topk_divergence(s_logits, ids, t_lp, mask, "jsd", beta=beta), jsd, atol=1e-5)
    # temperature: both sides softened, loss scaled by T^2
    T = 2.0
    pT, lqT = torch.softmax(t_logits / T, -1), torch.log_softmax(s_logits / T, -1)
    want = (pT * (pT.log() - lqT)).sum(-1) * T * T
    assert torch.allclose(topk_divergence(s_logits, ids, t_lp, mask, "forward_kl", temperature=T), want, atol=1e-4)


def test_topk_support_with_padding_slots():
    torch.manual_seed(1)
    s = torch.randn(3, 20)
    ids = torch.tensor([[4, 7, 0], [1, 2, 3], [5, 0, 0]])
    mask = torch.tensor([[True, True, False], [True, True, True], [True, False, False]])
    lps = torch.tensor([[-0.5, -1.0, 0.0], [-1.0, -1.5, -2.0], [-0.1, 0.0, 0.0]])
    d = topk_divergence(s, ids, lps, mask, "forward_kl")
    assert torch.all(d > 0)
    # a student that puts all its mass on the teacher's single-token support: ~zero divergence
    s2 = torch.full((1, 20), -30.0)
    s2[0, 5] = 30.0
    assert topk_divergence(s2, ids[2:], lps[2:], mask[2:], "forward_kl").item() < 1e-4
    assert topk_divergence(s2, ids[2:], lps[2:], mask[2:], "jsd", beta=0.5).abs().item() < 1e-4


# ------------------------------------------------------------------------------------------ end to end

@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    """A different tiny model (dense, other seed) with the same tokenizer, made peaky so there is a lot to learn."""
    torch.set_num_threads(1)
    model, tok = load_model("tiny-dense", seed=1, kernels="torch")
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(12.0)
    out = tmp_path_factory.mktemp("teacher")
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def recipe_for(stage: dict):
    return validate_data({"kind": "recipe", "name": "distill-test", "seed": 0, "model": {"kernels": "torch"},
                          "stages": [stage]}, "<test>", check_files=False)


def losses(metrics: Path) -> list[float]:
    rows = [json.loads(x) for x in metrics.read_text().splitlines()]
    return [r["loss"] for r in rows if "loss" in r]


def assert_all_params_changed(before: dict, model):
    after = dict(model.named_parameters())
    unchanged = [n for n, p in before.items() if torch.equal(p, after[n].detach())]
    assert not unchanged, unchanged


@torch.no_grad()
def full_kl(student, teacher, seqs: list[torch.Tensor], start: list[int]) -> float:
    """Mean KL(teacher || student) over the completion positions of `seqs` (full vocabulary)."""
    student.eval()
    tot, n = 0.0, 0
    for ids, s in zip(seqs, start, strict=False):
        lt = torch.log_softmax(teacher(ids[None]).logits[0, s - 1:-1].float(), -1)
        ls = torch.log_softmax(student(ids[None]).logits[0, s - 1:-1].float(), -1)
        tot += F.kl_div(ls, lt, log_target=True, reduction="sum").item()
        n += ids.numel() - s
    student.train()
    return tot / n


def test_logit_distillation_from_generated_topk_lowers_kl(tmp_path, teacher_dir):
    from hybrid_posttrain.cli import main as hpt

    spec = tmp_path / "gen.yaml"
    spec.write_text(f"""kind: generation
name: kd
teachers:
  - name: peaky
    backend: hf
    model: {teacher_dir}
    kernels: torch
    batch_size: 8
    device: cpu
    sampling: {{temperature: 1.0, max_new_tokens: 24, n: 1, seed: 0, top_logprobs: 8}}
prompts: {{source: "toyworld:programs", depths: [2, 3], n_per_depth: 8}}
shard_size: 8
datasets: {{policy: all, dpo: false}}
""")
    gen = tmp_path / "gen"
    assert hpt(["generate", str(spec), "--output-dir", str(gen)]) == 0
    man = json.loads((gen / "peaky" / "manifest.json").read_text())
    assert man["counts"]["samples"] == 16 and man["throughput"]["tokens_per_s"] > 0
    rows = [json.loads(x) for x in (gen / "peaky" / "sft.jsonl").read_text().splitlines()]
    assert len(rows) == 16 and all(len(r["teacher_top_logprobs"]) == len(r["teacher_token_ids"]) for r in rows)
    assert all(len(step) == 8 for step in rows[0]["teacher_top_logprobs"])

    recipe = recipe_for({"type": "distill", "mode": "logit", "loss": "forward_kl",
                         "data": {"train": str(gen / "peaky"), "max_length": 256},
                         "optim": {"lr": 3e-3, "max_steps": 30, "per_device_batch_size": 8, "logging_steps": 2,
                                   "save_steps": 30, "bf16": "off"}})
    student, tok = load_model("tiny-hybrid", seed=0, kernels="torch")
    before = {n: p.detach().clone() for n, p in student.named_parameters() if p.requires_grad}
    stage_dir = tmp_path / "stage0-distill"
    out = run_distill(recipe.stages[0], student, tok, stage_dir, recipe, tmp_path / "metrics.jsonl")
    assert out["kl_after"] < 0.6 * out["kl_before"], (out["kl_before"], out["kl_after"])
    print(f"logit top-k KL: {out['kl_before']:.3f} -> {out['kl_after']:.3f}")
    ls = losses(tmp_path / "metrics.jsonl")
    assert len(ls) >= 10 and sum(ls[-3:]) / 3 < 0.7 * sum(ls[:3]) / 3, ls
    assert list((stage_dir / "checkpoints").glob("checkpoint-*"))
    assert_all_params_changed(before, out["model"])

    # and the full-vocabulary KL to the real teacher fell on the teacher's own completions
    teacher, _ = load_model(str(teacher_dir), kernels="torch", with_tokenizer=False)
    fresh, _ = load_model("tiny-hybrid", seed=0, kernels="torch", with_tokenizer=False)
    seqs, starts = [], []
    for r in rows[:6]:
        p = tok(tok.apply_chat_template(r["messages"][:-1], add_generation_prompt=True, tokenize=False),
                add_special_tokens=False)["input_ids"]
        seqs.append(torch.tensor(p + r["teacher_token_ids"]))
        starts.append(len(p))
    assert full_kl(out["model"], teacher, seqs, starts) < 0.7 * full_kl(fresh, teacher, seqs, starts)


def test_logit_rows_without_topk_are_a_user_error(tmp_path):
    from hybrid_posttrain.errors import UserError

    data = tmp_path / "sft.jsonl"
    data.write_text(json.dumps({"messages": [{"role": "user", "content": "q"},
                                             {"role": "assistant", "content": "a"}]}) + "\n")
    recipe = recipe_for({"type": "distill", "data": {"train": str(data)}})
    student, tok = load_model("tiny-hybrid", seed=0, kernels="torch")
    with pytest.raises(UserError, match="top_logprobs") as e:
        run_distill(recipe.stages[0], student, tok, tmp_path / "s", recipe)
    assert e.value.path == str(data) and e.value.line == 1


def test_on_policy_distillation_through_trl_lowers_kl(tmp_path, teacher_dir):
    recipe = recipe_for({"type": "distill", "mode": "on_policy", "loss": "jsd", "jsd_beta": 0.5,
                         "teacher": str(teacher_dir), "max_new_tokens": 12,
                         "data": {"train": "toyworld:prompts", "max_samples": 32,
                                  "toyworld": {"n_per_depth": 8, "train_depths": [2, 3], "facts": False}},
                         "optim": {"lr": 3e-3, "max_steps": 12, "per_device_batch_size": 4, "logging_steps": 2,
                                   "save_steps": 12, "bf16": "off"}})
    student, tok = load_model("tiny-hybrid", seed=0, kernels="torch")
    teacher, _ = load_model(str(teacher_dir), kernels="torch", with_tokenizer=False)
    from hybrid_posttrain.tasks.toyworld import program_items

    seqs, starts = [], []
    for it in program_items(4, [3], seed=9):
        p = tok(tok.apply_chat_template([{"role": "user", "content": it.prompt}], add_generation_prompt=True,
                                        tokenize=False), add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            g = teacher.generate(torch.tensor([p]), max_new_tokens=12, do_sample=False, pad_token_id=tok.pad_token_id)
        seqs.append(g[0])
        starts.append(len(p))
    kl0 = full_kl(student, teacher, seqs, starts)
    side = tok.padding_side
    before = {n: p.detach().clone() for n, p in student.named_parameters() if p.requires_grad}
    out = run_distill(recipe.stages[0], student, tok, tmp_path / "stage0-distill", recipe, tmp_path / "metrics.jsonl")
    assert out["steps"] == 12
    kl1 = full_kl(out["model"], teacher, seqs, starts)
    assert kl1 < 0.8 * kl0, (kl0, kl1)
    assert tok.padding_side == side  # the stage restores the shared tokenizer
    print(f"on-policy KL(teacher||student): {kl0:.3f} -> {kl1:.3f}")
    assert list((tmp_path / "stage0-distill" / "checkpoints").glob("checkpoint-*"))
    assert_all_params_changed(before, out["model"])
