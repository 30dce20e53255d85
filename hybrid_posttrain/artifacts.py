"""The run-dir contract.

```
<run>/recipe.yaml        the resolved recipe (every default filled in)
<run>/metrics.jsonl      one row per logging step: {"stage", "step", "loss", "learning_rate", ...}
<run>/state.json         which stages are finished (for --resume)
<run>/stage<i>-<type>/checkpoints/checkpoint-N   Trainer checkpoints (for --resume)
<run>/final/             the final model and tokenizer (save_pretrained)
<run>/manifest.json      versions, git commit, data hashes, seed, wall time, tokens/s
<run>/eval/              evaluation results when the recipe has eval hooks
```
"""

from __future__ import annotations

import json
import platform
import subprocess
import time
from importlib import metadata
from pathlib import Path

import yaml

from hybrid_posttrain.data.io import atomic_write_text, file_sha256, read_json, write_json

LIBRARIES = ("torch", "transformers", "trl", "peft", "accelerate", "datasets", "triton", "deepspeed",
             "flash-linear-attention", "vllm", "liger-kernel")


def library_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for lib in ("hybrid-posttrain",) + LIBRARIES:
        try:
            out[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            continue
    return out


def git_commit() -> str | None:
    try:
        here = Path(__file__).resolve().parent
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                              timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


class RunDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def final(self) -> Path:
        return self.path / "final"

    def stage_dir(self, index: int, stage_type: str) -> Path:
        return self.path / f"stage{index}-{stage_type}"

    def write_recipe(self, resolved: dict) -> None:
        atomic_write_text(self.path / "recipe.yaml", yaml.safe_dump(resolved, sort_keys=False))

    def state(self) -> dict:
        p = self.path / "state.json"
        return read_json(p) if p.exists() else {"finished_stages": []}

    def mark_stage_done(self, index: int, metrics: dict) -> None:
        st = self.state()
        st["finished_stages"] = sorted(set(st["finished_stages"]) | {index})
        st.setdefault("stage_metrics", {})[str(index)] = metrics
        write_json(self.path / "state.json", st)

    def last_checkpoint(self, index: int, stage_type: str) -> Path | None:
        ck = self.stage_dir(index, stage_type) / "checkpoints"
        cands = sorted(ck.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1])) if ck.exists() else []
        # a run killed while saving leaves a partial checkpoint: Trainer writes trainer_state.json last
        complete = [c for c in cands if (c / "trainer_state.json").exists()]
        return complete[-1] if complete else None

    def write_manifest(self, recipe: dict, data_files: list[str], started: float, tokens: int,
                       extra: dict | None = None) -> dict:
        wall = time.time() - started
        manifest = {
            "name": recipe.get("name"),
            "seed": recipe.get("seed"),
            "versions": library_versions(),
            "git_commit": git_commit(),
            "data_hashes": {f: file_sha256(f) for f in data_files if Path(f).is_file()},
            "wall_time_s": round(wall, 3),
            "train_tokens": tokens,
            "tokens_per_s": round(tokens / wall, 1) if wall > 0 else None,
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        manifest.update(extra or {})
        write_json(self.path / "manifest.json", manifest)
        return manifest

    def read_metrics(self) -> list[dict]:
        if not self.metrics.exists():
            return []
        rows = []
        for line in self.metrics.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return rows
