"""Evaluation: suite specs (`suites.py`), loaders of the real benchmark formats (`loaders.py`), scoring with
bootstrap confidence intervals and paired tests (`scoring.py`), and `hpt eval` (`runner.py`).

Every student is scored on knowledge suites and extended-reasoning suites side by side; `evaluate(...)`
is the Python entry point (stages and the sweep call it), `paired_test(a, b)` compares two models on
the same items.
"""

from hybrid_posttrain.evaluation.scoring import aggregate, bootstrap_ci, mc_scores, paired_test, scores_by_id

__all__ = ["aggregate", "bootstrap_ci", "mc_scores", "paired_test", "scores_by_id", "evaluate"]


def evaluate(*args, **kwargs):
    """`runner.evaluate` (imported lazily: it pulls in torch and the models)."""
    from hybrid_posttrain.evaluation.runner import evaluate as _evaluate

    return _evaluate(*args, **kwargs)
