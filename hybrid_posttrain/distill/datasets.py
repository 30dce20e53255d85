"""Training sets from teacher samples: SFT sets (messages rows) and DPO pairs, written as JSONL.

* SFT: `{"messages": prompt turns + the assistant completion, "id", "teacher", "sample", "correct"}`;
  rows whose teacher captured top-k log-probs also carry `teacher_token_ids` and `teacher_top_logprobs`
  (`[[[token id, log-prob], ...] per completion token]`) for logit distillation (`stages/distill.py`).
* DPO, correct vs incorrect: per (teacher, prompt), a correct sample as `chosen` and an incorrect one as
  `rejected` (up to `max_pairs_per_prompt` disjoint pairs).
* DPO, teacher A vs teacher B: per prompt, A's best sample as `chosen` and B's as `rejected`, kept when
  the pair passes the filter (`any`, `chosen_correct`, `correct_vs_incorrect`) and the texts differ.

Pairs use TRL's conversational preference format: `{"prompt": [turns], "chosen": [assistant turn],
"rejected": [assistant turn]}` (what `stages/dpo.py` reads through `data/sources.py`).
`write_datasets(gen_dir, spec)` writes `<teacher>/sft.jsonl`, `<teacher>/dpo.jsonl` and
`pairs/<A>__over__<B>.jsonl` under a generation output dir, atomically.
"""

from __future__ import annotations

from pathlib import Path

from hybrid_posttrain.data.io import write_jsonl
from hybrid_posttrain.distill.filtering import _rank, filter_rows, group_by_prompt


def assistant(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


def to_sft_row(r: dict) -> dict:
    row = {"messages": list(r["messages"]) + assistant(r["completion"]), "id": r["id"], "teacher": r["teacher"],
           "sample": r["sample"], "correct": r["correct"]}
    if r.get("top_logprobs") is not None:
        row["teacher_token_ids"] = r["token_ids"]
        row["teacher_top_logprobs"] = r["top_logprobs"]
    return row


def sft_rows(rows: list[dict], policy: str = "correct", n: int | None = None) -> list[dict]:
    return [to_sft_row(r) for r in filter_rows(rows, policy, n)]


def _pair(prompt_row: dict, chosen: dict, rejected: dict) -> dict:
    return {"prompt": prompt_row["messages"], "chosen": assistant(chosen["completion"]),
            "rejected": assistant(rejected["completion"]), "id": prompt_row["id"],
            "chosen_teacher": chosen["teacher"], "rejected_teacher": rejected["teacher"],
            "chosen_sample": chosen["sample"], "rejected_sample": rejected["sample"],
            "chosen_correct": chosen["correct"], "rejected_correct": rejected["correct"]}


def dpo_correct_vs_incorrect(rows: list[dict], max_pairs_per_prompt: int = 1) -> list[dict]:
    out = []
    for samples in group_by_prompt(rows).values():
        ok = sorted((s for s in samples if s["correct"]), key=_rank)
        bad = [s for s in samples if not s["correct"] and s["finish_reason"] != "error"]
        seen = set()
        for c, b in zip(ok, bad, strict=False):
            if len(seen) >= max_pairs_per_prompt:
                break
            if c["completion"] == b["completion"] or (c["completion"], b["completion"]) in seen:
                continue
            seen.add((c["completion"], b["completion"]))
            out.append(_pair(c, c, b))
    return out


def dpo_teacher_vs_teacher(rows_a: list[dict], rows_b: list[dict], require: str = "chosen_correct") -> list[dict]:
    """A's best sample (chosen) against B's (rejected) on every prompt both answered."""
    best_a = {k[1]: min(v, key=_rank) for k, v in group_by_prompt(rows_a).items()}
    out = []
    for (_, pid), samples in group_by_prompt(rows_b).items():
        a = best_a.get(pid)
        if a is None:
            continue
        wrong = [s for s in samples if not s["correct"]]
        b = (wrong or samples)[0] if require != "any" else samples[0]
        if a["completion"] == b["completion"] or a["finish_reason"] == "error" or b["finish_reason"] == "error":
            continue
        if require == "chosen_correct" and not a["correct"]:
            continue
        if require == "correct_vs_incorrect" and not (a["correct"] and not b["correct"]):
            continue
        out.append(_pair(a, a, b))
    return out


def write_datasets(gen_dir: str | Path, spec, teachers: list[str]) -> dict:
    """Write the SFT sets and DPO pairs `spec` (a `DatasetsSpec`) asks for; returns their row counts."""
    from hybrid_posttrain.distill.generate import read_teacher_rows

    gen_dir = Path(gen_dir)
    counts: dict = {}
    rows = {t: read_teacher_rows(gen_dir / t) for t in teachers}
    for t, rs in rows.items():
        c = counts.setdefault(t, {})
        if spec.sft:
            c["sft"] = write_jsonl(gen_dir / t / "sft.jsonl", sft_rows(rs, spec.policy, spec.best_of))
        if spec.dpo:
            c["dpo"] = write_jsonl(gen_dir / t / "dpo.jsonl", dpo_correct_vs_incorrect(rs, spec.max_pairs_per_prompt))
    for a, b in spec.teacher_pairs:
        name = f"{a}__over__{b}"
        counts[name] = write_jsonl(gen_dir / "pairs" / f"{name}.jsonl",
                                   dpo_teacher_vs_teacher(rows[a], rows[b], spec.teacher_pair_filter))
    return counts
