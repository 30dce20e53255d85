"""Data sources for stages: a JSONL file, `hf:<dataset>[:split]`, or `toyworld:<name>` generated here.

Row formats (checked on load, a bad row is a `UserError` naming file and line):

* `sft`: `{"messages": [{"role", "content"}...]}` (chat) or `{"text": ...}` (plain language modelling).
* `preference`: `{"prompt", "chosen", "rejected"}`; each a string or a list of chat messages.
* `prompts`: `{"prompt", "answer"}` plus optional `task`, `id` (RL prompts; the answer feeds the verifier).

Toyworld sources (`recipe.ToyworldData` configures them): `corpus` (base-training text), `facts`,
`programs` and `mixed` (chat rows with a trace of the configured style), `preference` (a correct `cot`
trace as chosen and a slipped `noisy-cot` one as rejected), `prompts` (program prompts with answers).
"""

from __future__ import annotations

import random
from typing import Literal

from hybrid_posttrain.data.io import read_jsonl
from hybrid_posttrain.errors import UserError
from hybrid_posttrain.tasks.toyworld import Item, World, program_items, solve

Kind = Literal["sft", "preference", "prompts"]
REQUIRED = {"preference": ("prompt", "chosen", "rejected"), "prompts": ("prompt",)}


def chat(prompt: str, answer: str | None = None) -> list[dict]:
    msgs = [{"role": "user", "content": prompt}]
    if answer is not None:
        msgs.append({"role": "assistant", "content": answer})
    return msgs


def toyworld_rows(name: str, cfg, seed: int = 0) -> list[dict]:
    """Rows for a `toyworld:<name>` source built from the recipe's `ToyworldData` block."""
    world = World(cfg.seed, cfg.n_people)
    rng = random.Random(seed)
    fact_items: list[Item] = world.fact_items("train") if cfg.facts else []
    prog_items = program_items(cfg.n_per_depth, cfg.train_depths, seed=cfg.seed, split="train")
    if name == "corpus":
        return [{"text": doc} for doc in world.corpus(cfg.corpus_repeats)]
    if name in ("facts", "programs", "mixed"):
        items = {"facts": fact_items, "programs": prog_items, "mixed": fact_items + prog_items}[name]
        rows = [{"messages": chat(it.prompt, solve(it, cfg.style, rng, cfg.slip_rate)[0]), "id": it.id}
                for it in items]
        rng.shuffle(rows)
        return rows
    if name == "preference":
        rows = []
        for it in prog_items:
            good = solve(it, "cot")[0]
            bad, slipped = solve(it, "noisy-cot", rng, slip_rate=1.0)
            if not slipped or bad.rsplit("Answer:", 1)[-1] == good.rsplit("Answer:", 1)[-1]:
                continue
            rows.append({"prompt": chat(it.prompt), "chosen": [{"role": "assistant", "content": good}],
                         "rejected": [{"role": "assistant", "content": bad}], "id": it.id})
        rng.shuffle(rows)
        return rows
    if name == "prompts":
        rows = [{"prompt": chat(it.prompt), "answer": it.answer, "task": it.task, "id": it.id} for it in prog_items]
        rng.shuffle(rows)
        return rows
    raise UserError(f"unknown toyworld source {name!r}")


def _check_sft_row(row: dict, path: str, line: int) -> None:
    if "messages" in row:
        msgs = row["messages"]
        if not isinstance(msgs, list) or not all(isinstance(m, dict) and "role" in m and "content" in m for m in msgs):
            raise UserError("`messages` must be a list of {role, content} objects", path, line)
    elif "text" not in row:
        raise UserError("row needs `messages` (chat) or `text` (plain text)", path, line)


def load_rows(source: str, kind: Kind, toyworld_cfg=None, seed: int = 0, max_samples: int | None = None
              ) -> list[dict]:
    """Rows of `kind` from `source`; truncated to `max_samples`."""
    if source.startswith("toyworld:"):
        rows = toyworld_rows(source.split(":", 1)[1], toyworld_cfg, seed)
    elif source.startswith("hf:"):
        rows = _hf_rows(source[3:])
    else:
        rows = read_jsonl(source, REQUIRED.get(kind, ()))
        if kind == "sft":
            for i, row in enumerate(rows, start=1):
                _check_sft_row(row, source, i)
    return rows[:max_samples] if max_samples else rows


def _hf_rows(spec: str) -> list[dict]:
    name, _, split = spec.partition(":")
    try:
        import datasets

        ds = datasets.load_dataset(name, split=split or "train")
    except Exception as e:  # offline, missing dataset, bad split: one clear line
        raise UserError(f"cannot load HF dataset {name!r} (split {split or 'train'!r}): {str(e).splitlines()[0]}")
    return [dict(r) for r in ds]
