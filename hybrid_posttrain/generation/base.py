"""The one generation interface shared by teachers, evals and RL rollouts.

A backend turns chat prompts into completions: `Generator.generate(prompts, sampling)` takes a list of
conversations (each a list of `{"role", "content"}` messages ending with a user turn) and returns, for
each, `sampling.n` `Completion`s. Backends register themselves in `BACKENDS` by name (`program`, `hf`,
`vllm`, `openai`); `make_generator(name, **options)` builds one.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Protocol

from hybrid_posttrain.errors import UserError


@dataclass(frozen=True)
class Sampling:
    temperature: float = 0.0
    top_p: float = 1.0
    max_new_tokens: int = 128
    n: int = 1
    seed: int = 0
    top_logprobs: int = 0  # capture the top-k log-probs of each generated token (hf, vllm) when > 0


@dataclass
class Completion:
    text: str
    n_tokens: int = 0
    finish_reason: str = "stop"  # "stop" | "length" | "error"
    token_ids: list[int] | None = None
    logprobs: list[float] | None = None  # log-prob of each generated token under the generator
    top_logprobs: list[dict[int, float]] | None = None  # per token: {token id: log-prob} of the top k
    meta: dict = field(default_factory=dict)


class Generator(Protocol):
    name: str

    def generate(self, prompts: list[list[dict]], sampling: Sampling, progress: bool = True
                 ) -> list[list[Completion]]: ...

    def close(self) -> None: ...


# backend name -> "module:factory"; the factory takes keyword options and returns a Generator
BACKENDS: dict[str, str] = {
    "program": "hybrid_posttrain.generation.program:ProgramGenerator",
    "hf": "hybrid_posttrain.generation.hf:HFGenerator",
    "vllm": "hybrid_posttrain.generation.vllm:VLLMGenerator",
    "openai": "hybrid_posttrain.generation.openai:OpenAIGenerator",
}


def make_generator(backend: str, **options) -> Generator:
    if backend not in BACKENDS:
        raise UserError(f"unknown generation backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    mod, cls = BACKENDS[backend].split(":")
    return getattr(importlib.import_module(mod), cls)(**options)
