"""Filtering teacher samples by the task's verifier: policies `all`, `correct` and `best-of-n`.

Rows are those `hpt generate` writes (`distill/generate.py`): one per (teacher, prompt id, sample), each
with `correct` set by the verifier named in the row. `regrade(rows)` re-applies the verifiers (for rows
produced elsewhere or after a verifier fix).

* `all`: every sample.
* `correct`: every sample the verifier accepts.
* `best-of-n`: per (teacher, prompt) one sample among its first `n` (all when n is None): a correct one
  when there is one (ties broken by the highest mean token log-prob when recorded, then the shortest,
  then the lowest sample index); prompts with no correct sample are dropped (rejection sampling).
"""

from __future__ import annotations

from collections import defaultdict

from hybrid_posttrain.errors import UserError

POLICIES = ("all", "correct", "best-of-n")


def regrade(rows: list[dict]) -> list[dict]:
    """Rows with `correct` recomputed by each row's verifier (the prompt text is the last user turn)."""
    from hybrid_posttrain.tasks.verifiers import get_verifier

    out = []
    for r in rows:
        question = r.get("question") or next(m["content"] for m in reversed(r["messages"]) if m["role"] == "user")
        ok = r.get("finish_reason") != "error" and get_verifier(r["verifier"])(r["completion"], str(r["answer"]),
                                                                                question)
        out.append({**r, "correct": bool(ok)})
    return out


def group_by_prompt(rows: list[dict]) -> dict[tuple[str, str], list[dict]]:
    """{(teacher, id): samples sorted by sample index}, in first-seen order."""
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in rows:
        groups[(r["teacher"], r["id"])].append(r)
    return {k: sorted(v, key=lambda r: r["sample"]) for k, v in groups.items()}


def _rank(r: dict) -> tuple:
    lps = r.get("logprobs")
    mean_lp = sum(lps) / len(lps) if lps else 0.0
    return (not r["correct"], -mean_lp, r["n_tokens"], r["sample"])


def best_of_n(samples: list[dict], n: int | None = None) -> dict | None:
    """The best correct sample among the first `n`, or None when none is correct."""
    pool = [s for s in samples[: n or len(samples)] if s["finish_reason"] != "error"]
    if not pool:
        return None
    best = min(pool, key=_rank)
    return best if best["correct"] else None


def filter_rows(rows: list[dict], policy: str = "correct", n: int | None = None) -> list[dict]:
    if policy not in POLICIES:
        raise UserError(f"unknown filtering policy {policy!r}; expected one of {', '.join(POLICIES)}")
    if policy == "all":
        return [r for r in rows if r["finish_reason"] != "error"]
    if policy == "correct":
        return [r for r in rows if r["correct"]]
    out = []
    for samples in group_by_prompt(rows).values():
        best = best_of_n(samples, n)
        if best is not None:
            out.append(best)
    return out
