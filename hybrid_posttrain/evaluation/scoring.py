"""Scoring: per-item grading, aggregates with bootstrap 95% intervals, and paired model comparisons.

* Multiple choice (`mc_scores`): `acc` and `acc_norm` exactly as lm-evaluation-harness defines them:
  each choice's score is the sum of the log-likelihoods of its continuation tokens (`target_delimiter +
  choice` after the context); `acc` picks the argmax, `acc_norm` the argmax of that sum divided by the
  choice's length in characters (`len(choice)`, the harness's `completion_len`).
* Generative (`grade_output`): the output is cut at the first stop string, then the suite's extractor and
  grader from `tasks/verifiers.py` give `(extracted, correct)`.
* `aggregate(values)`: mean with a percentile bootstrap 95% interval (seeded, so reruns agree).
* `paired_test(a, b)`: model A minus model B on the same items: the difference of means, its paired
  bootstrap 95% interval, and a two-sided p-value (exact McNemar test for 0/1 scores, sign-flip
  permutation test otherwise). The sweep uses it to compare teachers on shared items.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from hybrid_posttrain.tasks.verifiers import grade

# ------------------------------------------------------------------------------------ per-item scores

def mc_scores(lls: Sequence[float], choices: Sequence[str], gold_index: int) -> dict:
    """lm-evaluation-harness `acc` / `acc_norm` of one item from its choices' summed log-likelihoods."""
    lls_a = np.asarray(lls, dtype=np.float64)
    completion_len = np.array([float(len(c)) for c in choices])
    pred = int(np.argmax(lls_a))
    pred_norm = int(np.argmax(lls_a / completion_len))
    return {"pred": pred, "pred_norm": pred_norm, "acc": float(pred == gold_index),
            "acc_norm": float(pred_norm == gold_index)}


def truncate_at_stop(text: str, stop: Sequence[str]) -> str:
    cut = len(text)
    for s in stop:
        if s:
            i = text.find(s)
            if i >= 0:
                cut = min(cut, i)
    return text[:cut]


def grade_output(output: str, gold: str, prompt: str, grader: str, extractor: str = "answer",
                 stop: Sequence[str] = ()) -> tuple[str, bool]:
    """(extracted answer, correct) of one generated output."""
    return grade(grader, truncate_at_stop(output, stop), gold, prompt, extractor)


# ------------------------------------------------------------------------------------------ aggregates

def bootstrap_ci(values: Sequence[float], n_boot: int = 1000, seed: int = 0, alpha: float = 0.05
                 ) -> tuple[float, float, float]:
    """(mean, low, high): the mean and its percentile-bootstrap (1 - alpha) interval over items."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return float("nan"), float("nan"), float("nan")
    mean = float(x.mean())
    if x.size == 1:
        return mean, mean, mean
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    for start in range(0, n_boot, 256):  # chunks keep memory flat for large suites
        stop = min(n_boot, start + 256)
        idx = rng.integers(0, x.size, size=(stop - start, x.size))
        means[start:stop] = x[idx].mean(axis=1)
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return mean, float(lo), float(hi)


def aggregate(values: Sequence[float], n_boot: int = 1000, seed: int = 0) -> dict:
    """{value, ci_low, ci_high, n} of per-item scores."""
    mean, lo, hi = bootstrap_ci(values, n_boot, seed)
    return {"value": mean, "ci_low": lo, "ci_high": hi, "n": len(values)}


def aggregate_by(rows: Sequence[Mapping], key: str, score: str = "correct", n_boot: int = 1000,
                 seed: int = 0) -> dict:
    """Aggregates per value of `key` (e.g. depth), keys sorted numerically when they are numbers."""
    groups: dict = {}
    for r in rows:
        k = r.get(key)
        if k is None:
            k = (r.get("meta") or {}).get(key)
        if k is None:
            continue
        groups.setdefault(k, []).append(float(r[score]))
    order = sorted(groups, key=lambda k: (not isinstance(k, (int, float)), k if isinstance(k, (int, float)) else str(k)))
    return {str(k): aggregate(groups[k], n_boot, seed) for k in order}


# ------------------------------------------------------------------------------------------- paired

def _align(a, b) -> tuple[np.ndarray, np.ndarray]:
    """Two aligned score vectors from two {item id: score} maps (their shared ids) or two sequences."""
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        ids = sorted(set(a) & set(b))
        return (np.array([float(a[i]) for i in ids]), np.array([float(b[i]) for i in ids]))
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"paired scores need the same items: got {x.shape} and {y.shape}")
    return x, y


def mcnemar_exact_p(n01: int, n10: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts (binomial, p = 1/2)."""
    n = n01 + n10
    if n == 0:
        return 1.0
    k = min(n01, n10)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2.0 ** n
    return float(min(1.0, 2.0 * tail))


def paired_test(a, b, n_boot: int = 2000, seed: int = 0, alpha: float = 0.05) -> dict:
    """A minus B on the same items: {diff, ci_low, ci_high, p_value, n, test, a, b}.

    `a` and `b` are {item id: score} maps (compared on the ids they share) or equal-length sequences.
    The interval is the percentile bootstrap of the mean per-item difference (items resampled jointly).
    The p-value is the exact McNemar test when all scores are 0/1, else a sign-flip permutation test.
    """
    x, y = _align(a, b)
    n = int(x.size)
    if n == 0:
        return {"diff": float("nan"), "ci_low": float("nan"), "ci_high": float("nan"), "p_value": float("nan"),
                "n": 0, "test": "none", "a": float("nan"), "b": float("nan")}
    d = x - y
    diff, lo, hi = bootstrap_ci(d, n_boot, seed, alpha)
    binary = bool(np.all(np.isin(x, (0.0, 1.0))) and np.all(np.isin(y, (0.0, 1.0))))
    if binary:
        n10 = int(np.sum((x == 1) & (y == 0)))
        n01 = int(np.sum((x == 0) & (y == 1)))
        p, test = mcnemar_exact_p(n01, n10), "mcnemar-exact"
    else:
        rng = np.random.default_rng(seed)
        obs = abs(d.mean())
        signs = rng.choice((-1.0, 1.0), size=(n_boot, n))
        perm = np.abs((signs * d).mean(axis=1))
        p, test = float((1 + np.sum(perm >= obs - 1e-12)) / (n_boot + 1)), "sign-flip"
    return {"diff": diff, "ci_low": lo, "ci_high": hi, "p_value": p, "n": n, "test": test,
            "a": float(x.mean()), "b": float(y.mean())}


def scores_by_id(rows: Sequence[Mapping], score: str = "correct") -> dict[str, float]:
    """{item id: score} from per-item result rows (for `paired_test`)."""
    return {str(r["id"]): float(r[score]) for r in rows}
