"""Teacher specs (`kind: teacher`) and generation specs (`kind: generation`): the schemas and their defaults.

A teacher names a backend and a model: `program` (the model is a trace style: terse, cot, tracker,
noisy-cot), `hf` / `vllm` (a local path, hub id or preset), `openai` (the model name the endpoint
serves, plus `endpoint`, `concurrency`, timeouts and retries). Options that only one backend reads are
errors on another (a `slip_rate` on an hf teacher is a typo, not a silent no-op).

A generation spec runs teachers x a prompt set (`hpt generate SPEC`). Teachers are inline mappings or
paths to teacher YAML files (relative to the spec); the prompt set is `toyworld:facts`,
`toyworld:programs` (with depths) or a JSONL file of `{id, prompt | messages, answer, task}` rows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Union

from pydantic import Field, ValidationInfo, field_validator, model_validator

from hybrid_posttrain.errors import UserError
from hybrid_posttrain.recipe import Frozen, check_name, resolve_spec_path
from hybrid_posttrain.tasks.toyworld import ATTRIBUTES, STYLES


class SamplingSpec(Frozen):
    """How a teacher samples (mirrors `generation.base.Sampling`)."""

    temperature: float = Field(0.0, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    max_new_tokens: int = Field(256, gt=0)
    n: int = Field(1, gt=0)  # samples per prompt
    seed: int = 0
    top_logprobs: int = Field(0, ge=0)  # capture the top-k teacher log-probs per token (hf, vllm)


# options read by one backend only: field -> backends that read it
_BACKEND_ONLY = {
    "slip_rate": ("program",),
    "world_seed": ("program",),
    "n_people": ("program",),
    "batch_size": ("hf",),
    "device": ("hf",),
    "kernels": ("hf",),
    "dtype": ("hf", "vllm"),
    "tensor_parallel_size": ("vllm",),
    "gpu_memory_utilization": ("vllm",),
    "max_model_len": ("vllm",),
    "enforce_eager": ("vllm",),
    "endpoint": ("openai",),
    "api_key_env": ("openai",),
    "concurrency": ("openai",),
    "timeout_s": ("openai",),
    "max_retries": ("openai",),
    "backoff_s": ("openai",),
}


class TeacherSpec(Frozen):
    kind: Literal["teacher"] = "teacher"
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")  # also its folder name under the output dir
    backend: Literal["program", "hf", "vllm", "openai"]
    model: str  # program: a trace style; hf/vllm: path, hub id or preset; openai: the served model name
    tokenizer: str | None = None  # hf/vllm: a tokenizer other than the model's (token counts for program)
    chat_template: str | None = None  # a Jinja chat template replacing the tokenizer's (hf, vllm)
    system_prompt: str | None = None  # prepended to every chat that has no system message
    sampling: SamplingSpec = SamplingSpec()
    # program
    slip_rate: float = Field(0.2, ge=0, le=1)
    world_seed: int = 0
    n_people: int = Field(240, gt=0)
    # hf / vllm
    batch_size: int = Field(16, gt=0)
    device: str | None = None
    kernels: Literal["auto", "hpt", "fla", "torch"] = "auto"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    tensor_parallel_size: int = Field(1, gt=0)
    gpu_memory_utilization: float = Field(0.85, gt=0, le=1)
    max_model_len: int | None = Field(None, gt=0)
    enforce_eager: bool | None = None  # None: the backend's hybrid-safe choice
    # openai
    endpoint: str | None = None  # base URL, e.g. http://localhost:8000/v1
    api_key_env: str | None = "OPENAI_API_KEY"  # environment variable holding the key (never the key itself)
    concurrency: int = Field(8, gt=0)
    timeout_s: float = Field(60.0, gt=0)
    max_retries: int = Field(5, ge=0)
    backoff_s: float = Field(0.5, ge=0)

    @field_validator(*_BACKEND_ONLY)
    @classmethod
    def _backend_only(cls, v, info: ValidationInfo):
        # field validators run only on keys the spec sets, so a default never trips this
        owners = _BACKEND_ONLY[info.field_name]
        backend = info.data.get("backend")
        if backend is not None and backend not in owners:
            raise ValueError(f"{info.field_name!r} applies to the {'/'.join(owners)} backend, not {backend!r}")
        return v

    @field_validator("model")
    @classmethod
    def _program_style(cls, v: str, info: ValidationInfo) -> str:
        if info.data.get("backend") == "program" and v not in STYLES:
            raise ValueError(f"a program teacher's model is a trace style: one of {', '.join(STYLES)} (got {v!r})")
        return v

    @field_validator("sampling")
    @classmethod
    def _logprobs_backend(cls, v: SamplingSpec, info: ValidationInfo) -> SamplingSpec:
        if v.top_logprobs and info.data.get("backend") not in ("hf", "vllm"):
            raise ValueError("sampling.top_logprobs is captured by the hf and vllm backends only")
        return v

    @model_validator(mode="after")
    def _needs_endpoint(self) -> TeacherSpec:
        if self.backend == "openai" and not self.endpoint:
            raise ValueError("an openai teacher needs `endpoint:` (e.g. http://localhost:8000/v1)")
        return self

    def generator_options(self) -> dict:
        """Keyword options for `generation.make_generator(self.backend, ...)`."""
        if self.backend == "program":
            return dict(name=self.name, style=self.model, slip_rate=self.slip_rate, seed=self.sampling.seed,
                        world_seed=self.world_seed, n_people=self.n_people, tokenizer=self.tokenizer)
        if self.backend == "hf":
            return dict(name=self.name, model=self.model, tokenizer=self.tokenizer, batch_size=self.batch_size,
                        device=self.device, dtype=self.dtype, kernels=self.kernels,
                        chat_template=self.chat_template, system_prompt=self.system_prompt)
        if self.backend == "vllm":
            return dict(name=self.name, model=self.model, tokenizer=self.tokenizer, dtype=self.dtype,
                        tensor_parallel_size=self.tensor_parallel_size,
                        gpu_memory_utilization=self.gpu_memory_utilization, max_model_len=self.max_model_len,
                        enforce_eager=self.enforce_eager, chat_template=self.chat_template,
                        system_prompt=self.system_prompt, top_logprobs=self.sampling.top_logprobs,
                        seed=self.sampling.seed)
        return dict(name=self.name, model=self.model, endpoint=self.endpoint, api_key_env=self.api_key_env,
                    concurrency=self.concurrency, timeout_s=self.timeout_s, max_retries=self.max_retries,
                    backoff_s=self.backoff_s, system_prompt=self.system_prompt)

    def sampling_obj(self, seed_offset: int = 0):
        from hybrid_posttrain.generation.base import Sampling

        s = self.sampling
        return Sampling(temperature=s.temperature, top_p=s.top_p, max_new_tokens=s.max_new_tokens, n=s.n,
                        seed=s.seed + seed_offset, top_logprobs=s.top_logprobs)


class PromptSet(Frozen):
    """Where the prompts come from. Toyworld items are generated from `seed`; a JSONL file is read as is."""

    source: str  # toyworld:facts | toyworld:programs | path to a JSONL of {id, prompt|messages, answer, task}
    split: Literal["train", "test"] = "train"
    seed: int = 0
    n_people: int = Field(240, gt=0)  # toyworld:facts
    attributes: list[Literal["town", "colour", "number", "pet"]] = list(ATTRIBUTES)  # toyworld:facts
    depths: list[int] = [2, 3, 4, 5, 6]  # toyworld:programs
    n_per_depth: int = Field(20, gt=0)  # toyworld:programs
    max_items: int | None = Field(None, gt=0)
    verifier: str = "exact"  # for JSONL rows with neither a known task nor a `verifier` field
    system_prompt: str | None = None  # added as a system turn to prompts built from toyworld items
    instruction: str | None = None  # appended to toyworld prompts (e.g. "End with 'Answer: X'.")

    @field_validator("source")
    @classmethod
    def _source(cls, v: str, info: ValidationInfo) -> str:
        if v.startswith("toyworld:"):
            if v not in ("toyworld:facts", "toyworld:programs"):
                raise ValueError(f"unknown prompt set {v!r}; expected toyworld:facts, toyworld:programs "
                                 f"or a JSONL path")
            return v
        return resolve_spec_path(v, info, f"prompt file {v!r} does not exist (give a JSONL path, toyworld:facts "
                                          f"or toyworld:programs)")

    @field_validator("verifier")
    @classmethod
    def _verifier(cls, v: str) -> str:
        from hybrid_posttrain.tasks.verifiers import VERIFIERS

        return check_name(v, VERIFIERS, "verifier")

    @field_validator("depths")
    @classmethod
    def _depths(cls, v: list[int]) -> list[int]:
        if not v or any(d < 1 for d in v):
            raise ValueError("depths must be a non-empty list of positive integers")
        return v


class DatasetsSpec(Frozen):
    """Training sets written after generation (see `distill/datasets.py`)."""

    sft: bool = True  # <teacher>/sft.jsonl
    policy: Literal["all", "correct", "best-of-n"] = "correct"
    best_of: int | None = Field(None, gt=0)  # n for best-of-n (None: all samples of a prompt)
    dpo: bool = True  # <teacher>/dpo.jsonl: correct vs incorrect samples of the same teacher
    max_pairs_per_prompt: int = Field(1, gt=0)
    teacher_pairs: list[tuple[str, str]] = []  # [[chosen teacher, rejected teacher], ...] -> pairs/A__over__B.jsonl
    teacher_pair_filter: Literal["any", "chosen_correct", "correct_vs_incorrect"] = "chosen_correct"


class GenerationSpec(Frozen):
    kind: Literal["generation"] = "generation"
    name: str
    teachers: list[Union[TeacherSpec, str]] = Field(min_length=1)  # inline, or paths to teacher YAML files
    prompts: PromptSet
    shard_size: int = Field(32, gt=0)  # prompts per shard: the unit of atomic writes and of resumption
    output_dir: str = "data/{name}"
    max_failure_rate: float = Field(1.0, ge=0, le=1)  # exit 1 when a teacher's failed samples exceed it
    datasets: DatasetsSpec = DatasetsSpec()

    @field_validator("teachers", mode="after")
    @classmethod
    def _load_teachers(cls, v: list, info: ValidationInfo) -> list:
        from hybrid_posttrain.recipe import load_spec

        base = Path((info.context or {}).get("base_dir") or ".")
        out = []
        for t in v:
            if isinstance(t, str):
                p = Path(t)
                if not p.is_absolute() and not p.exists() and (base / p).exists():
                    p = base / p
                if not p.exists():
                    raise ValueError(f"teacher spec {t!r} does not exist (relative paths are from the spec's "
                                     f"folder)")
                try:
                    t = load_spec(p, kind="teacher", check_files=(info.context or {}).get("check_files", True))
                except UserError as e:  # keep the teacher file's own location in the message
                    raise ValueError(f"in teacher spec {e}") from None
            out.append(t)
        names = [t.name for t in out]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"teacher names must be unique (their output folders); repeated: {', '.join(dup)}")
        return out

    @field_validator("datasets")
    @classmethod
    def _check_pairs(cls, v: DatasetsSpec, info: ValidationInfo) -> DatasetsSpec:
        names = {t.name for t in info.data.get("teachers") or [] if isinstance(t, TeacherSpec)}
        for a, b in v.teacher_pairs:
            for t in (a, b):
                if names and t not in names:
                    raise ValueError(f"datasets.teacher_pairs names {t!r}, which is not a teacher of this spec "
                                     f"({', '.join(sorted(names))})")
        return v

    def resolved_teachers(self) -> list[TeacherSpec]:
        return [t for t in self.teachers if isinstance(t, TeacherSpec)]
