"""Scoring on hand-built cases: answer extraction (`#### 1,234`, `\\boxed{}`, units, negatives), graders,
lm-evaluation-harness acc / acc_norm, bootstrap intervals and the paired test."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hybrid_posttrain.evaluation.scoring import (
    aggregate,
    aggregate_by,
    bootstrap_ci,
    grade_output,
    mc_scores,
    mcnemar_exact_p,
    paired_test,
    truncate_at_stop,
)
from hybrid_posttrain.tasks.verifiers import VERIFIERS, extract_letter, extract_number

NUMERIC_CASES = [
    # (completion, gold, correct)
    ("She pays 600 + 634 = 1,234 dollars.\n#### 1,234", "1234", True),
    ("#### 1,234", "1,234", True),
    ("#### 1,234.", "1234", True),
    ("so the total is \\boxed{1234}", "1234", True),
    ("\\boxed{}", "0", False),  # an empty box is no answer
    ("The answer is 42 apples.", "42", True),
    ("Answer: 7 km/h", "7", True),
    ("It costs $18.", "18", True),
    ("#### -5", "-5", True),
    ("#### −5", "-5", True),  # unicode minus
    ("The temperature falls to -3.5 degrees.\nAnswer: -3.5", "-3.5", True),
    ("#### 5", "-5", False),
    ("Answer: 12 then 13", "12", False),  # the last number of the answer counts
    ("no number here", "3", False),
    ("", "3", False),
]


@pytest.mark.parametrize("completion,gold,ok", NUMERIC_CASES)
def test_numeric_extraction(completion, gold, ok):
    extracted, correct = grade_output(completion, gold, "", "numeric")
    assert correct is ok, (completion, extracted)
    assert VERIFIERS["numeric"](completion, gold, "") is ok


def test_extractors_keep_what_was_extracted():
    assert grade_output("work...\n#### 1,234", "1234", "", "numeric")[0] == "1,234"
    assert extract_number("#### 1,234") == "1234"
    assert extract_number("Answer: -3.50 m") == "-3.5"
    assert extract_number("\\boxed{-7}") == "-7"
    assert grade_output("x \\boxed{\\frac{1}{2}} y", "1/2", "", "math") == ("\\frac{1}{2}", True)
    assert grade_output("The answer is \\boxed{\\frac{2}{4}}", "0.5", "", "math")[1]
    assert not grade_output("\\boxed{\\frac{1}{3}}", "0.5", "", "math")[1]
    # BBH: "So the answer is (B)." -> "(B)"; letters
    assert grade_output("Let's think. So the answer is (B).", "(B)", "", "exact") == ("(B)", True)
    assert grade_output("So the answer is False.", "False", "", "exact")[1]
    assert extract_letter("I think the answer is (C)") == "(C)"
    assert extract_letter("Answer: I pick D") == "D"


def test_stop_strings_cut_the_next_question():
    out = "2+2=4\n#### 4\n\nQuestion: next one?\nAnswer: 9\n#### 9"
    assert truncate_at_stop(out, ["\n\nQuestion:"]) == "2+2=4\n#### 4"
    assert grade_output(out, "4", "", "numeric", stop=["\n\nQuestion:"]) == ("4", True)
    assert grade_output(out, "4", "", "numeric") == ("9", False)  # without the stop the wrong tail wins


def test_program_grader_executes_the_prompt():
    prompt = "Run the program (all arithmetic mod 10): a=3; b=a+9; a=b+b. What is a?"
    assert grade_output("b=2\na=4\nAnswer: 4", "junk-gold", prompt, "program") == ("4", True)
    assert not grade_output("Answer: 2", "2", prompt, "program")[1]


def test_mc_scores_acc_and_acc_norm():
    # choice 1 has the highest raw log-likelihood, choice 2 the highest per character
    lls = [-9.0, -4.0, -6.0, -20.0]
    choices = ["abc", "z", "abcdefghij", "q"]
    s = mc_scores(lls, choices, gold_index=2)
    assert s["pred"] == 1 and s["pred_norm"] == 2 and s["acc"] == 0.0 and s["acc_norm"] == 1.0
    assert mc_scores(lls, choices, gold_index=1)["acc"] == 1.0


def test_bootstrap_interval():
    rng = np.random.default_rng(1)
    x = (rng.random(400) < 0.3).astype(float)
    mean, lo, hi = bootstrap_ci(x, n_boot=2000)
    assert mean == pytest.approx(x.mean()) and lo < mean < hi
    se = math.sqrt(mean * (1 - mean) / len(x))  # the normal-approximation interval is close
    assert lo == pytest.approx(mean - 1.96 * se, abs=0.015) and hi == pytest.approx(mean + 1.96 * se, abs=0.015)
    small = bootstrap_ci(x[:40], n_boot=2000)
    assert small[2] - small[1] > hi - lo
    assert bootstrap_ci([1, 1, 1]) == (1.0, 1.0, 1.0)
    assert bootstrap_ci(x, seed=3) == bootstrap_ci(x, seed=3)
    agg = aggregate([0, 1, 1, 1])
    assert agg["n"] == 4 and agg["value"] == 0.75
    by = aggregate_by([{"depth": 10, "correct": 1}, {"depth": 2, "correct": 0}, {"depth": 2, "correct": 1}], "depth")
    assert list(by) == ["2", "10"] and by["2"]["value"] == 0.5 and by["10"]["n"] == 1


def test_paired_test():
    a = {f"i{k}": 1.0 for k in range(30)}
    b = {f"i{k}": (1.0 if k < 10 else 0.0) for k in range(30)}
    b["extra"] = 1.0  # not in a: ignored
    r = paired_test(a, b)
    assert r["n"] == 30 and r["diff"] == pytest.approx(20 / 30) and r["test"] == "mcnemar-exact"
    assert r["ci_low"] > 0 and r["p_value"] == pytest.approx(2 / 2 ** 20)
    same = paired_test([1, 0, 1, 0], [1, 0, 1, 0])
    assert same["diff"] == 0 and same["p_value"] == 1.0
    assert mcnemar_exact_p(3, 3) == 1.0 and mcnemar_exact_p(0, 5) == pytest.approx(2 / 32)
    # continuous scores: sign-flip permutation test; a clear shift is significant, noise is not
    rng = np.random.default_rng(0)
    base = rng.normal(size=200)
    shifted = paired_test(base + 0.5 + rng.normal(scale=0.1, size=200), base)
    assert shifted["test"] == "sign-flip" and shifted["p_value"] < 0.01 and shifted["ci_low"] > 0.4
    noise = paired_test(base + rng.normal(scale=0.1, size=200), base)
    assert noise["p_value"] > 0.01 and noise["ci_low"] < 0 < noise["ci_high"]
    with pytest.raises(ValueError):
        paired_test([1, 0], [1])
