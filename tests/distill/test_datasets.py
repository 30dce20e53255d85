"""Filtering policies, SFT sets and DPO pairs from teacher rows."""

from __future__ import annotations

import pytest

from hybrid_posttrain.distill.datasets import dpo_correct_vs_incorrect, dpo_teacher_vs_teacher, sft_rows
from hybrid_posttrain.distill.filtering import filter_rows, regrade
from hybrid_posttrain.errors import UserError

PROMPT = "Run the program (all arithmetic mod 10): a=3; b=a+4. What is b?"


def row(teacher, pid, sample, completion, n_tokens=5, logprobs=None, finish="stop"):
    r = dict(id=pid, teacher=teacher, sample=sample, messages=[{"role": "user", "content": PROMPT}],
             completion=completion, answer="7", task="programs", verifier="program", n_tokens=n_tokens,
             finish_reason=finish, correct=None)
    if logprobs is not None:
        r["logprobs"] = logprobs
    return r


@pytest.fixture
def rows():
    rs = [row("t", "p1", 0, "b=8\nAnswer: 8"), row("t", "p1", 1, "a=3\nb=a+4=7\nAnswer: 7", n_tokens=12),
          row("t", "p1", 2, "Answer: 7", n_tokens=3), row("t", "p2", 0, "Answer: 1"), row("t", "p2", 1, "Answer: 2"),
          row("t", "p3", 0, "", finish="error")]
    return regrade(rs)


def test_regrade_uses_the_rows_verifier(rows):
    assert [r["correct"] for r in rows] == [False, True, True, False, False, False]


def test_policies(rows):
    assert len(filter_rows(rows, "all")) == 5  # errors dropped
    assert [(r["id"], r["sample"]) for r in filter_rows(rows, "correct")] == [("p1", 1), ("p1", 2)]
    best = filter_rows(rows, "best-of-n")
    assert [(r["id"], r["sample"]) for r in best] == [("p1", 2)]  # correct and shortest; p2 has none correct
    assert filter_rows(rows, "best-of-n", n=1) == []  # only sample 0 considered: wrong
    assert [(r["id"], r["sample"]) for r in filter_rows(rows, "best-of-n", n=2)] == [("p1", 1)]
    with pytest.raises(UserError):
        filter_rows(rows, "top")


def test_best_of_n_prefers_higher_logprob():
    rs = regrade([row("t", "p", 0, "Answer: 7", logprobs=[-2.0, -2.0]), row("t", "p", 1, "The answer: 7.", logprobs=[-0.1])])
    assert filter_rows(rs, "best-of-n")[0]["sample"] == 1


def test_sft_rows_are_messages(rows):
    sft = sft_rows(rows, "correct")
    assert len(sft) == 2
    assert sft[0]["messages"] == [{"role": "user", "content": PROMPT},
                                  {"role": "assistant", "content": "a=3\nb=a+4=7\nAnswer: 7"}]
    r = dict(rows[1], token_ids=[1, 2], top_logprobs=[[[1, -0.1]], [[2, -0.2]]])
    s = sft_rows([r], "all")[0]
    assert s["teacher_token_ids"] == [1, 2] and s["teacher_top_logprobs"][1] == [[2, -0.2]]


def test_dpo_correct_vs_incorrect(rows):
    pairs = dpo_correct_vs_incorrect(rows, max_pairs_per_prompt=2)
    assert len(pairs) == 1  # p1 has 2 correct but 1 incorrect; p2 none correct
    p = pairs[0]
    assert p["chosen"][0]["content"] == "Answer: 7" and p["rejected"][0]["content"] == "b=8\nAnswer: 8"
    assert p["prompt"][-1]["role"] == "user" and p["chosen_correct"] and not p["rejected_correct"]


def test_dpo_teacher_vs_teacher():
    a = regrade([row("A", "p1", 0, "Answer: 7"), row("A", "p2", 0, "Answer: 3")])
    b = regrade([row("B", "p1", 0, "Answer: 5"), row("B", "p2", 0, "Answer: 7")])
    assert [p["id"] for p in dpo_teacher_vs_teacher(a, b, "any")] == ["p1", "p2"]
    assert [p["id"] for p in dpo_teacher_vs_teacher(a, b, "chosen_correct")] == ["p1"]
    both = dpo_teacher_vs_teacher(a, b, "correct_vs_incorrect")
    assert len(both) == 1 and both[0]["chosen_teacher"] == "A" and both[0]["rejected_teacher"] == "B"
