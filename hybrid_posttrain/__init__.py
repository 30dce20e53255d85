"""hybrid-posttrain: post-training and distillation of hybrid (attention + Gated DeltaNet) language models.

Entry points: the `hpt` command line (`hybrid_posttrain.cli`), recipes (`hybrid_posttrain.recipe`),
stages (`hybrid_posttrain.stages`), teachers (`hybrid_posttrain.distill`), evals
(`hybrid_posttrain.evaluation`) and sweeps (`hybrid_posttrain.sweep`).
"""

__version__ = "0.1.0"
