"""Eval suite specs (`kind: suite`, files `evals/NAME.yaml`): what is asked, how it is prompted and graded.

A suite has a `category` (`knowledge` or `reasoning`, the two axes every student is scored on), a `type`
(`multiple_choice`: each choice is scored by its log-likelihood as lm-evaluation-harness does;
`generative`: the model writes an answer which is extracted and graded), a `source`, a prompt, few-shot
examples, a generation budget, and an extractor and grader named in `tasks/verifiers.py`.

Sources: `toyworld:facts`, `toyworld:facts-mc`, `toyworld:programs` (generated from `toyworld.seed`, which
must match the seed of the world the student was base-trained on), a local path read by `format`
(`gsm8k` JSONL, `mmlu` CSV folder, `bbh` folder with `tasks/` and `cot-prompts/`, or `items` JSONL of
`{id, prompt, answer, choices?}`), or `hf:<dataset>[:config][:split]` when a hub is reachable.

Suites are referred to by name (`--suites toyworld-facts` -> `evals/toyworld-facts.yaml`, looked up under
the current directory and then the repository) or by a path. `resolve_suite(name_or_path, overrides)`
returns the validated `SuiteSpec`; `overrides` are `key.path=value` strings (`toyworld.seed=1`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from hybrid_posttrain.errors import UserError
from hybrid_posttrain.recipe import Frozen, check_name, load_spec
from hybrid_posttrain.tasks.toyworld import ATTRIBUTES
from hybrid_posttrain.tasks.verifiers import EXTRACTORS, MATCHERS

REPO_ROOT = Path(__file__).resolve().parents[2]
TOYWORLD_SUITE_SOURCES = ("toyworld:facts", "toyworld:facts-mc", "toyworld:programs")


class ToyworldSuite(Frozen):
    """How toyworld items are generated (for `toyworld:*` sources)."""

    seed: int = 0  # the World(seed) the students were base-trained on
    n_people: int = Field(240, gt=0)
    split: Literal["train", "test"] = "test"  # test people's facts are only in the base corpus
    attributes: list[Literal["town", "colour", "number", "pet"]] = list(ATTRIBUTES)
    depths: list[int] = list(range(2, 13))
    n_per_depth: int = Field(20, gt=0)
    n_vars: int = Field(3, gt=0, le=4)


class Prompt(Frozen):
    """How an item becomes a prompt.

    The prompt is `description + shots + template`, each formatted with the item's fields
    (`{question}`, `{options}` (choices as `A. ...` lines), `{subject}`, `{preamble}` (BBH's CoT prompt)).
    A few-shot example is `template + target_delimiter + target + fewshot_delimiter`. Generative suites
    send the prompt as one user turn through the chat template of the generation backend; multiple-choice
    suites score `context + target_delimiter + choice`, where the context is the prompt itself
    (`chat: false`, as lm-evaluation-harness does) or the chat-rendered user turn followed by
    `assistant_prefix` (`chat: true`, for chat-tuned students).
    """

    description: str = ""
    template: str = "{question}"
    target_delimiter: str = " "
    fewshot_delimiter: str = "\n\n"
    chat: bool = False
    assistant_prefix: str = ""
    system: str | None = None


class FewShot(Frozen):
    """Few-shot examples: `n` taken from the start of each subset (and held out of scoring), or given here."""

    n: int = Field(0, ge=0)
    examples: list[dict[str, str]] = []  # each {question, target} (other keys fill template fields)


class GenerationBudget(Frozen):
    max_new_tokens: int = Field(64, gt=0)
    temperature: float = Field(0.0, ge=0.0)
    # the output is cut at the first of these (a base model goes on with the next few-shot question)
    stop: list[str] = []


class SuiteSpec(Frozen):
    kind: Literal["suite"] = "suite"
    name: str
    description: str = ""
    category: Literal["knowledge", "reasoning"]
    type: Literal["multiple_choice", "generative"]
    source: str
    format: Literal["auto", "toyworld", "gsm8k", "mmlu", "bbh", "items"] = "auto"
    subsets: list[str] = []  # MMLU subjects / BBH tasks to keep (empty: all)
    max_items_per_subset: int | None = Field(None, gt=0)  # first N of each subset after the few-shot ones
    toyworld: ToyworldSuite = ToyworldSuite()
    prompt: Prompt = Prompt()
    fewshot: FewShot = FewShot()
    generation: GenerationBudget = GenerationBudget()
    extractor: str = "answer"
    grader: str = "exact"
    metric: Literal["acc", "acc_norm", "accuracy"] = "accuracy"
    bootstrap: int = Field(1000, ge=100)  # bootstrap resamples for the 95% intervals

    @field_validator("extractor")
    @classmethod
    def _extractor(cls, v: str) -> str:
        return check_name(v, EXTRACTORS, "extractor")

    @field_validator("grader")
    @classmethod
    def _grader(cls, v: str) -> str:
        return check_name(v, MATCHERS, "grader")

    @field_validator("source")
    @classmethod
    def _source(cls, v: str) -> str:
        if v.startswith("toyworld:") and v not in TOYWORLD_SUITE_SOURCES:
            raise ValueError(f"unknown toyworld suite source {v!r}; expected one of "
                             f"{', '.join(TOYWORLD_SUITE_SOURCES)}")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> SuiteSpec:
        mc = self.type == "multiple_choice"
        if mc and self.metric == "accuracy":
            object.__setattr__(self, "metric", "acc")
        if not mc and self.metric != "accuracy":
            raise ValueError(f"metric {self.metric!r} is for multiple_choice suites; generative suites use "
                             f"'accuracy'")
        if self.source == "toyworld:facts-mc" and not mc:
            raise ValueError("toyworld:facts-mc is a multiple_choice source")
        if self.source == "toyworld:programs" and mc:
            raise ValueError("toyworld:programs is a generative source (programs are executed, not chosen)")
        return self

    def resolved_format(self) -> str:
        """The loader that reads `source` (`auto` is inferred from the source's name and layout)."""
        if self.source.startswith("hf:"):
            return "hf"  # rows read as `format` by the hub loader
        if self.format != "auto":
            return self.format
        if self.source.startswith("toyworld:"):
            return "toyworld"
        p = Path(self.source)
        low = self.source.lower()
        if (p / "tasks").is_dir() or "bbh" in low:
            return "bbh"
        if "mmlu" in low or (p.is_dir() and any(p.rglob("*.csv"))):
            return "mmlu"
        if "gsm8k" in low:
            return "gsm8k"
        return "items"


def suite_path(name_or_path: str) -> Path:
    """The YAML file of a suite given by name (`evals/NAME.yaml` under the cwd, then the repository) or path."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.exists():
        if not p.exists():
            raise UserError(f"suite file not found: {p}", str(p), 1)
        return p
    for root in (Path.cwd(), REPO_ROOT):
        for ext in (".yaml", ".yml"):
            cand = root / "evals" / f"{name_or_path}{ext}"
            if cand.exists():
                return cand
    known = sorted({q.stem for root in (Path.cwd(), REPO_ROOT) for q in (root / "evals").glob("*.yaml")})
    raise UserError(f"unknown suite {name_or_path!r}; give a path to a suite YAML or one of: "
                    f"{', '.join(known) or '(no evals/*.yaml found)'}", "--suites", 1)


def resolve_suite(name_or_path: str, overrides: list[str] = ()) -> tuple[SuiteSpec, Path]:
    """(validated spec, its file) for a suite name or path, with `key.path=value` overrides applied."""
    path = suite_path(name_or_path)
    spec = load_spec(path, list(overrides), kind="suite", check_files=False)
    assert isinstance(spec, SuiteSpec)
    return spec, path


def resolve_source_path(source: str, spec_file: Path | None) -> Path:
    """A local source path: as given (absolute or relative to the cwd), else relative to the suite file's
    folder or the repository root. Raises UserError naming the suite file when it is nowhere."""
    p = Path(source).expanduser()
    cands = [p]
    if not p.is_absolute():
        if spec_file is not None:
            cands.append(spec_file.parent / p)
        cands.append(REPO_ROOT / p)
    for c in cands:
        if c.exists():
            return c
    raise UserError(f"data source {source!r} not found (tried {', '.join(str(c) for c in cands)}); set "
                    f"`source:` to a local copy (e.g. --set source=/path/to/data)",
                    str(spec_file) if spec_file else None, _source_line(spec_file))


def _source_line(spec_file: Path | None) -> int:
    if spec_file is None or not spec_file.exists():
        return 1
    for i, line in enumerate(spec_file.read_text(encoding="utf-8").splitlines(), start=1):
        if line.lstrip().startswith("source:"):
            return i
    return 1
