"""Generation: one interface (`base.py`), four backends (program, hf, vllm, openai)."""

from hybrid_posttrain.generation.base import BACKENDS, Completion, Generator, Sampling, make_generator

__all__ = ["BACKENDS", "Completion", "Generator", "Sampling", "make_generator"]
