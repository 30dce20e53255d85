"""SFT end to end through `hpt run` on CPU: loss falls, every parameter changes, the run dir is complete,
`--resume` continues a killed run from its last checkpoint, and 2 accelerate processes match 1."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from hybrid_posttrain.models import load_model

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "recipes" / "demo" / "sft.yaml"
SMALL = ["stages.0.data.max_samples=160", "stages.0.data.max_length=128", "stages.0.optim.per_device_batch_size=4",
         "stages.0.optim.logging_steps=1"]


def hpt(*args, **kw):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "hybrid_posttrain.cli", *args], cwd=REPO, capture_output=True,
                          text=True, env=env, **kw)


def sets(extra):
    out = []
    for s in SMALL + extra:
        out += ["--set", s]
    return out


def losses(run: Path, stage="sft"):
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in rows if "loss" in r and r.get("stage") == stage]


def test_sft_run_loss_falls_params_change_run_dir_complete(tmp_path):
    run = tmp_path / "run"
    r = hpt("run", str(RECIPE), "--output-dir", str(run), *sets(["stages.0.optim.max_steps=24"]))
    assert r.returncode == 0, r.stderr[-3000:]
    for name in ("recipe.yaml", "metrics.jsonl", "manifest.json", "state.json", "final/config.json",
                 "final/model.safetensors", "final/tokenizer.json", "final/chat_template.jinja"):
        assert (run / name).exists(), name
    assert list((run / "stage0-sft" / "checkpoints").glob("checkpoint-*"))
    ls = losses(run)
    assert len(ls) >= 20
    first, last = sum(v for _, v in ls[:3]) / 3, sum(v for _, v in ls[-3:]) / 3
    assert last < first - 1.0, (first, last)
    man = json.loads((run / "manifest.json").read_text())
    assert man["versions"]["transformers"] and man["tokens_per_s"] > 0 and man["seed"] == 0
    # every trainable parameter moved away from the seeded initialisation
    init, _ = load_model("tiny-hybrid", dtype="float32", kernels="torch", seed=0, with_tokenizer=False)
    final, _ = load_model(str(run / "final"), dtype="float32", kernels="torch", with_tokenizer=False)
    final_params = dict(final.named_parameters())
    unchanged = [n for n, p in init.named_parameters() if torch.equal(p.detach(), final_params[n].detach())]
    assert not unchanged, unchanged


def test_resume_after_sigkill_continues_from_checkpoint(tmp_path):
    run = tmp_path / "run"
    args = ["run", str(RECIPE), "--output-dir", str(run),
            *sets(["stages.0.optim.max_steps=30", "stages.0.optim.save_steps=4"])]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "hybrid_posttrain.cli", *args], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    ck = run / "stage0-sft" / "checkpoints"
    deadline = time.time() + 240
    while time.time() < deadline and not (ck.exists() and any(p.name == "checkpoint-8" for p in ck.iterdir())):
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert (ck / "checkpoint-8").exists(), "no checkpoint before the kill"
    assert not (run / "final").exists()
    saved = max(int(p.name.split("-")[1]) for p in ck.glob("checkpoint-*") if (p / "trainer_state.json").exists())
    before = len(losses(run))
    r = hpt(*args, "--resume")
    assert r.returncode == 0, r.stderr[-3000:]
    new_steps = [s for s, _ in losses(run)[before:]]
    # the resumed run continues right after the checkpoint, not from step 1, and finishes
    assert new_steps[0] == saved + 1 and new_steps[-1] == 30, (new_steps, saved)
    assert json.loads((run / "state.json").read_text())["finished_stages"] == [0]


@pytest.mark.slow
def test_two_cpu_processes_match_one_process_global_batch(tmp_path):
    common = ["stages.0.optim.max_steps=8", "stages.0.packing=false", "stages.0.optim.save_steps=100"]
    one = tmp_path / "one"
    r1 = hpt("run", str(RECIPE), "--output-dir", str(one), *sets(common + ["stages.0.optim.per_device_batch_size=8"]))
    assert r1.returncode == 0, r1.stderr[-3000:]
    two = tmp_path / "two"
    r2 = hpt("run", str(RECIPE), "--output-dir", str(two),
             *sets(common + ["launch.num_processes=2", "stages.0.optim.per_device_batch_size=4"]))
    assert r2.returncode == 0, r2.stderr[-3000:]
    l1, l2 = losses(one), losses(two)
    assert [s for s, _ in l1] == [s for s, _ in l2]
    # same global batch (8) and data order -> the same loss curve up to the per-rank token averaging
    assert abs(l1[-1][1] - l2[-1][1]) < 0.05 * l1[-1][1], (l1[-1], l2[-1])
    assert l1[-1][1] < l1[0][1]


def test_a_worker_ends_its_process_group(tmp_path):
    """A launched worker destroys its process group before the interpreter exits (`runner._end_process_group`):
    left to exit, gloo's threads could abort a finished run (exit status -6, seen in the 2-process test above).
    Here a one-process gloo group: after a clean run it passes the barrier and is gone; after a failed one it is gone
    without waiting at the barrier; with no group there is nothing to do."""
    import torch.distributed as dist

    from hybrid_posttrain import runner

    for ok in (True, False):
        dist.init_process_group("gloo", init_method=f"file://{tmp_path / f'store{ok}'}", rank=0, world_size=1)
        assert dist.is_initialized()
        runner._end_process_group(ok)
        assert not dist.is_initialized()
    runner._end_process_group(True)  # no group: a no-op
