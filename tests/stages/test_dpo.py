"""DPO stage (TRL DPOTrainer, packed hybrid path) on CPU.

* A short run from a fresh tiny-hybrid on preference pairs read from JSONL (toyworld programs; chosen: the
  program's value, rejected: a digit absent from the prompt) raises preference accuracy on held-out pairs
  above chance; every trainable parameter changes and the loss falls. (The demo recipe runs the harder
  `toyworld:preference` pairs, whose rejected trace differs by one slipped arithmetic step.)
* Loss mapping: `length_normalize` selects TRL's length-normalised `sigmoid_norm`.
* Bad input: a preference row missing a field is one line `file:line: ...` and exit status 2 from `hpt run`.
"""

import json
import random
import subprocess
import sys

import torch

from hybrid_posttrain.models import load_model
from hybrid_posttrain.recipe import DPOStage, Recipe
from hybrid_posttrain.stages.common import trainable_snapshot
from hybrid_posttrain.tasks.toyworld import program_items

torch.set_num_threads(1)


def _grounded_pairs(path, n_per_depth: int = 100) -> None:
    """Preference JSONL on toyworld programs: chosen answers with the program's value, rejected with a digit
    that appears nowhere in the prompt (a grounded vs a made-up answer)."""
    rng = random.Random(0)
    rows = []
    for item in program_items(n_per_depth, [2, 3], seed=0, split="train"):
        absent = [d for d in "0123456789" if d not in item.prompt]
        rows.append({"prompt": [{"role": "user", "content": item.prompt}],
                     "chosen": [{"role": "assistant", "content": f"Answer: {item.answer}"}],
                     "rejected": [{"role": "assistant", "content": f"Answer: {rng.choice(absent)}"}]})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_dpo_raises_heldout_preference_accuracy(tmp_path):
    from hybrid_posttrain.stages.dpo import run_dpo

    data = tmp_path / "prefs.jsonl"
    _grounded_pairs(data)
    recipe = Recipe.model_validate({"name": "t", "seed": 0, "stages": [{
        "type": "dpo", "data": {"train": str(data), "max_length": 64},
        "optim": {"lr": 3e-3, "epochs": 3, "per_device_batch_size": 16, "logging_steps": 2, "save_steps": 10000},
        "beta": 0.1, "eval_fraction": 0.25, "packing": True}]})
    stage = recipe.stages[0]
    metrics = tmp_path / "metrics.jsonl"
    model, tok = load_model("tiny-hybrid", dtype="float32", kernels="torch", seed=0)
    before = trainable_snapshot(model)
    out = run_dpo(stage, model, tok, tmp_path / "dpo", recipe, metrics)
    # held-out pairs (other programs): the policy now prefers the chosen answer more often than before, and
    # its implicit reward (log-ratio to the reference, the starting model) ranks chosen first above chance
    assert out["heldout_pairs"] == 50
    assert out["reward_acc_after"] > 0.62, out
    assert out["pref_acc_after"] > out["pref_acc_before"] + 0.05, out
    after = dict(out["model"].named_parameters())
    unchanged = [n for n, p in before.items() if torch.equal(p, after[n].detach())]
    assert not unchanged, unchanged
    losses = [r["loss"] for r in map(json.loads, metrics.read_text().splitlines()) if "loss" in r]
    assert len(losses) >= 4 and sum(losses[-2:]) / 2 < sum(losses[:2]) / 2, losses
    assert "forward" not in vars(out["model"])  # TRL's fused-head / packing patches are gone after the stage


def test_length_normalize_selects_sigmoid_norm():
    from hybrid_posttrain.stages.dpo import trl_loss_type

    data = {"train": "toyworld:preference"}
    assert trl_loss_type(DPOStage(data=data, length_normalize=True)) == ["sigmoid_norm"]
    assert trl_loss_type(DPOStage(data=data, loss_type="ipo", length_normalize=True)) == ["ipo"]
    assert trl_loss_type(DPOStage(data=data)) == ["sigmoid"]


def test_preference_row_missing_field_is_one_line_exit_2(tmp_path):
    data = tmp_path / "prefs.jsonl"
    good = {"prompt": [{"role": "user", "content": "hi"}], "chosen": [{"role": "assistant", "content": "a"}],
            "rejected": [{"role": "assistant", "content": "b"}]}
    bad = {k: v for k, v in good.items() if k != "rejected"}
    data.write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
    recipe = tmp_path / "dpo.yaml"
    recipe.write_text(f"kind: recipe\nname: bad\nmodel:\n  dtype: float32\n  kernels: torch\nstages:\n"
                      f"  - type: dpo\n    data:\n      train: {data}\n")
    proc = subprocess.run([sys.executable, "-m", "hybrid_posttrain.cli", "run", str(recipe), "--output-dir",
                           str(tmp_path / "run")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert lines[0].startswith(f"{data}:2:") and "'rejected'" in lines[0], lines[0]
