"""Recipes: the typed, frozen schema, YAML loading with line numbers, `--set` overrides, and `hpt validate`.

A recipe (`kind: recipe`) names a model, one or more stages (`sft`, `dpo`, `rl`, `distill`), the launch
set-up, evaluation hooks, a seed and an output dir. Every default lives here. Unknown keys are errors
(with the nearest valid key suggested), and every error is reported as `file:line: message`.

Other spec kinds (`teacher`, `generation`, `suite`, `sweep`) are validated through the same loader:
`SPEC_KINDS` maps each `kind:` to the module and class that define its schema.
"""

from __future__ import annotations

import difflib
import importlib
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from hybrid_posttrain.errors import UserError


class Frozen(BaseModel):
    """Base of every schema: frozen, and unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())


# ------------------------------------------------------------------------------------------- data sources

TOYWORLD_SOURCES = ("corpus", "facts", "programs", "mixed", "preference", "prompts")


def check_name(value: str, names, what: str) -> str:
    """`value` must be one of `names` (a registry such as tasks.verifiers.VERIFIERS); else a ValueError
    `unknown <what> 'x'; did you mean 'y'?` (or the list of valid names)."""
    if value not in names:
        near = difflib.get_close_matches(value, list(names), n=1)
        hint = f"did you mean {near[0]!r}?" if near else f"expected one of {', '.join(sorted(names))}"
        raise ValueError(f"unknown {what} {value!r}; {hint}")
    return value


def resolve_spec_path(value: str, info: ValidationInfo, missing: str) -> str:
    """A path in a spec: as given if it exists, else relative to the spec file's folder; when neither
    exists (and the validation checks files), a ValueError saying `missing`."""
    base = (info.context or {}).get("base_dir")
    p = Path(value)
    if not p.is_absolute() and not p.exists() and base is not None and (Path(base) / p).exists():
        return str(Path(base) / p)
    if (info.context or {}).get("check_files", True) and not p.exists():
        raise ValueError(missing)
    return value


def check_source(value: str | None, info: ValidationInfo) -> str | None:
    """A data source is `toyworld:<name>`, `hf:<dataset>[:split]`, or a path to an existing JSONL file."""
    if value is None or value.startswith("hf:"):
        return value
    if value.startswith("toyworld:"):
        name = value.split(":", 1)[1]
        if name not in TOYWORLD_SOURCES:
            raise ValueError(f"unknown toyworld source {name!r}; expected one of "
                             f"{', '.join('toyworld:' + s for s in TOYWORLD_SOURCES)}")
        return value
    return resolve_spec_path(value, info, f"data file {value!r} does not exist (give a JSONL path, "
                                          f"toyworld:<name> or hf:<dataset>)")


class ToyworldData(Frozen):
    """How toyworld data is generated (when a source is `toyworld:*`)."""

    seed: int = 0
    n_people: int = 240
    corpus_repeats: int = 3
    train_depths: list[int] = [2, 3, 4, 5, 6]
    n_per_depth: int = 60
    style: Literal["terse", "cot", "tracker", "noisy-cot"] = "cot"
    slip_rate: float = Field(0.2, ge=0.0, le=1.0)
    facts: bool = True


class Data(Frozen):
    train: str
    eval: str | None = None
    max_length: int = Field(512, gt=0)
    max_samples: int | None = Field(None, gt=0)
    toyworld: ToyworldData = ToyworldData()

    _check_train = field_validator("train")(check_source)
    _check_eval = field_validator("eval")(check_source)


class Optim(Frozen):
    lr: float = Field(1e-3, gt=0)
    epochs: float = Field(1.0, gt=0)
    max_steps: int = -1
    per_device_batch_size: int = Field(8, gt=0)
    grad_accum: int = Field(1, gt=0)
    warmup_ratio: float = Field(0.0, ge=0, le=1)
    weight_decay: float = Field(0.0, ge=0)
    scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = "linear"
    max_grad_norm: float = 1.0
    optim: str = "adamw_torch"
    bf16: Literal["auto", "on", "off"] = "auto"
    gradient_checkpointing: bool = False
    # which layers gradient_checkpointing checkpoints (models/fastpath.py): all | attention | gdn | mlp |
    # mixers, or a comma list such as "attention,mlp"
    checkpoint_layers: str = "all"
    logging_steps: int = Field(5, gt=0)
    save_steps: int = Field(50, gt=0)
    save_total_limit: int = 2

    @field_validator("checkpoint_layers")
    @classmethod
    def _layers(cls, v: str) -> str:
        parts = {p.strip() for p in v.split(",") if p.strip()}
        bad = parts - {"all", "attention", "gdn", "mlp", "mixers"}
        if not parts or bad:
            raise ValueError(f"checkpoint_layers {v!r}: choose all, attention, gdn, mlp, mixers or a comma list of them")
        return ",".join(sorted(parts))


class Peft(Frozen):
    enabled: bool = False
    r: int = Field(16, gt=0)
    alpha: int = 32
    dropout: float = 0.0
    # attention (q/k/v/o) and GDN projections (q/k/v/a/b/g/o for OlmoHybrid; in_proj_* for Qwen3-Next) and MLP
    target_modules: list[str] = ["q_proj", "k_proj", "v_proj", "o_proj", "a_proj", "b_proj", "g_proj",
                                 "in_proj_qkvz", "in_proj_ba", "out_proj", "gate_proj", "up_proj", "down_proj"]


class SFTStage(Frozen):
    type: Literal["sft"] = "sft"
    data: Data
    optim: Optim = Optim()
    peft: Peft = Peft()
    assistant_only_loss: bool = True
    packing: bool = True


# the loss types TRL 1.16's DPOConfig accepts (`sigmoid_norm` is the length-normalised sigmoid loss)
DPO_LOSS_TYPES = ("sigmoid", "sigmoid_norm", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair",
                  "sppo_hard", "aot", "aot_unpaired", "apo_zero", "apo_down", "discopop", "sft")


class DPOStage(Frozen):
    type: Literal["dpo"] = "dpo"
    data: Data
    optim: Optim = Optim(lr=1e-4)
    peft: Peft = Peft()
    beta: float = Field(0.1, gt=0)
    loss_type: Literal[DPO_LOSS_TYPES] = "sigmoid"
    # length-normalised DPO (the OLMo recipe's `dpo_norm`): sigmoid -> TRL's `sigmoid_norm`; ipo already is
    length_normalize: bool = False
    ld_alpha: float | None = Field(None, ge=0, le=1)  # LD-DPO weighting of the longer response's tail
    label_smoothing: float = Field(0.0, ge=0, lt=0.5)
    reference: Literal["copy", "adapters_disabled"] = "copy"
    precompute_ref_log_probs: bool = False
    packing: bool = True
    max_prompt_length: int = 256
    eval_fraction: float = Field(0.0, ge=0, lt=1)  # held-out pairs for preference accuracy before/after

    @model_validator(mode="after")
    def _check(self):
        if self.reference == "adapters_disabled" and not self.peft.enabled:
            raise ValueError("reference: adapters_disabled needs peft.enabled: true (else use reference: copy)")
        if self.length_normalize and self.loss_type not in ("sigmoid", "sigmoid_norm", "ipo"):
            raise ValueError(f"length_normalize applies to loss_type sigmoid (-> sigmoid_norm) or ipo, "
                             f"not {self.loss_type!r}")
        return self


class RLStage(Frozen):
    type: Literal["rl"] = "rl"
    data: Data
    optim: Optim = Optim(lr=1e-4)
    peft: Peft = Peft()
    reward: str = "program"
    num_generations: int = Field(8, gt=1)
    max_new_tokens: int = Field(64, gt=0)
    temperature: float = Field(1.0, gt=0)
    beta: float = 0.0
    loss_type: str = "dapo"
    rollout: Literal["hf", "vllm"] = "hf"
    vllm_mode: Literal["colocate", "server"] = "colocate"
    importance_sampling: Literal["none", "token_truncate", "token_mask", "sequence_truncate",
                                 "sequence_mask"] = "token_truncate"
    importance_sampling_cap: float = 2.0
    importance_sampling_level: Literal["token", "sequence"] = "token"  # GRPO (token) or GSPO (sequence) ratios
    epsilon: float = Field(0.2, gt=0)  # PPO clip range
    num_iterations: int = Field(1, gt=0)
    scale_rewards: Literal["group", "batch", "none"] = "group"
    mask_truncated_completions: bool = False
    vllm_gpu_memory_utilization: float = Field(0.3, gt=0, le=1)
    vllm_server_url: str | None = None  # server mode: e.g. http://localhost:8000

    @field_validator("reward")
    @classmethod
    def _known_reward(cls, v: str) -> str:
        from hybrid_posttrain.tasks.verifiers import VERIFIERS

        return check_name(v, VERIFIERS, "reward")

    @model_validator(mode="after")
    def _check_batch(self):
        batch = self.optim.per_device_batch_size * self.optim.grad_accum
        if batch % self.num_generations:
            raise ValueError(f"optim.per_device_batch_size x optim.grad_accum ({batch}) must be a multiple of "
                             f"num_generations ({self.num_generations}): each batch holds whole prompt groups")
        return self


class DistillStage(Frozen):
    type: Literal["distill"] = "distill"
    data: Data
    optim: Optim = Optim()
    peft: Peft = Peft()
    # logit: top-k teacher log-probs captured by `hpt generate` (data.train = a teacher's sft.jsonl or folder);
    # on_policy: the student generates, a live teacher (`teacher`: path / hub id / preset) scores (TRL)
    mode: Literal["logit", "on_policy"] = "logit"
    loss: Literal["forward_kl", "jsd"] = "forward_kl"
    jsd_beta: float = Field(0.5, ge=0, le=1)  # TRL's convention: 0 forward KL, 1 reverse KL, 0.5 JSD
    teacher: str | None = None
    temperature: float = Field(1.0, gt=0)
    max_new_tokens: int = Field(128, gt=0)  # on_policy: completion length the student samples


Stage = Annotated[Union[SFTStage, DPOStage, RLStage, DistillStage], Field(discriminator="type")]


class Model(Frozen):
    name: str = "tiny-hybrid"
    overrides: dict[str, Any] = {}
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    kernels: Literal["auto", "hpt", "fla", "torch"] = "auto"
    tokenizer: str | None = None
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2"] = "sdpa"


class Launch(Frozen):
    num_processes: int = Field(1, gt=0)
    accelerate_config: str | None = None
    deepspeed: str | None = None

    @field_validator("accelerate_config", "deepspeed")
    @classmethod
    def _exists(cls, v: str | None, info: ValidationInfo) -> str | None:
        return v if v is None else resolve_spec_path(v, info, f"config file {v!r} does not exist")


class EvalHook(Frozen):
    suites: list[str] = []
    max_items: int | None = None


class Recipe(Frozen):
    kind: Literal["recipe"] = "recipe"
    name: str
    seed: int = 0
    model: Model = Model()
    stages: list[Stage] = Field(min_length=1)
    launch: Launch = Launch()
    eval: EvalHook = EvalHook()
    output_dir: str = "runs/{name}"


# --------------------------------------------------------------------------------------------- loading

SPEC_KINDS: dict[str, str] = {
    "recipe": "hybrid_posttrain.recipe:Recipe",
    "teacher": "hybrid_posttrain.distill.specs:TeacherSpec",
    "generation": "hybrid_posttrain.distill.specs:GenerationSpec",
    "suite": "hybrid_posttrain.evaluation.suites:SuiteSpec",
    "sweep": "hybrid_posttrain.sweep:SweepSpec",
}


def _schema_for(kind: str) -> type[BaseModel]:
    mod, cls = SPEC_KINDS[kind].split(":")
    return getattr(importlib.import_module(mod), cls)


class _LineLoader(yaml.SafeLoader):
    pass


def _compose(text: str, path: str) -> tuple[Any, yaml.Node | None]:
    try:
        node = yaml.compose(text, Loader=_LineLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise UserError(f"malformed YAML: {getattr(e, 'problem', e)}", path,
                        (mark.line + 1) if mark else 1) from None
    return data, node


def _node_at(node: yaml.Node | None, loc: tuple) -> tuple[yaml.Node | None, bool]:
    """The YAML node at `loc` (a pydantic error location), or the deepest existing ancestor."""
    cur = node
    for part in loc:
        if isinstance(cur, yaml.MappingNode) and isinstance(part, str):
            nxt = None
            for k, v in cur.value:
                if k.value == part:
                    nxt = v
                    break
            if nxt is None:
                if part in ("sft", "dpo", "rl", "distill"):  # discriminator tag in the loc
                    continue
                return cur, False
            cur = nxt
        elif isinstance(cur, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(cur.value):
                return cur, False
            cur = cur.value[part]
        else:
            continue
    return cur, True


def _key_line(node: yaml.Node | None, loc: tuple) -> int:
    """Line (1-based) of the key `loc[-1]` (for unknown keys) or of the value at `loc`."""
    if not loc:  # a model-level validator: the top of the mapping
        return (node.start_mark.line + 1) if node is not None else 1
    parent, _ = _node_at(node, loc[:-1])
    if isinstance(parent, yaml.MappingNode):
        for k, _v in parent.value:
            if k.value == loc[-1]:
                return k.start_mark.line + 1
    target, _ = _node_at(node, loc)
    return (target.start_mark.line + 1) if target is not None else 1


def _fields_at(schema: type[BaseModel], loc: tuple) -> list[str]:
    """Valid field names of the model that holds `loc[-1]` (for did-you-mean suggestions)."""
    cur: Any = schema
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        if isinstance(cur, type) and issubclass(cur, BaseModel):
            if part in cur.model_fields:
                cur = _unwrap(cur.model_fields[part].annotation)
            elif isinstance(cur, list):
                pass
        elif isinstance(cur, list):  # a union: pick the member tagged `part`
            for member in cur:
                tag = member.model_fields.get("type")
                if tag is not None and tag.default == part:
                    cur = member
                    break
    if isinstance(cur, list):
        return sorted({f for m in cur for f in m.model_fields})
    if isinstance(cur, type) and issubclass(cur, BaseModel):
        return list(cur.model_fields)
    return []


def _unwrap(ann: Any) -> Any:
    origin = typing.get_origin(ann)
    if origin is Annotated:
        return _unwrap(typing.get_args(ann)[0])
    if origin in (list, tuple):
        return _unwrap(typing.get_args(ann)[0])
    if origin in (Union, types.UnionType):
        members = [_unwrap(a) for a in typing.get_args(ann) if a is not type(None)]
        models = [m for m in members if isinstance(m, type) and issubclass(m, BaseModel)]
        if len(models) == 1:
            return models[0]
        return models or members[0]
    return ann


def _format_error(err: dict, schema: type[BaseModel]) -> str:
    loc = tuple(p for p in err["loc"])
    dotted = ".".join(str(p) for p in loc if p not in ("sft", "dpo", "rl", "distill") or p == loc[-1])
    if err["type"] == "extra_forbidden":
        valid = _fields_at(schema, loc)
        near = difflib.get_close_matches(str(loc[-1]), valid, n=1, cutoff=0.5)
        hint = f"did you mean {near[0]!r}?" if near else f"valid keys here: {', '.join(valid)}"
        return f"unknown key {dotted!r}; {hint}"
    if err["type"] == "missing":
        return f"missing required key {dotted!r}"
    if err["type"] == "union_tag_invalid":
        return f"{dotted}: {err['msg']}"
    msg = err["msg"].removeprefix("Value error, ")
    got = err.get("input")
    show = not isinstance(got, (dict, list)) and got is not None and repr(got) not in msg
    got_s = f" (got {got!r})" if show else ""
    return f"{dotted}: {msg}{got_s}"


def validate_data(data: Any, path: str, node: yaml.Node | None = None, kind: str | None = None,
                  check_files: bool = True) -> BaseModel:
    """Validate an already-loaded spec; errors become `UserError(file:line: ...)`."""
    if not isinstance(data, dict):
        raise UserError("a spec must be a YAML mapping with a `kind:` key", path, 1)
    kind = kind or data.get("kind")
    if kind is None:
        raise UserError(f"missing `kind:`; expected one of {', '.join(SPEC_KINDS)}", path, 1)
    if kind not in SPEC_KINDS:
        near = difflib.get_close_matches(str(kind), list(SPEC_KINDS), n=1)
        hint = f"did you mean {near[0]!r}?" if near else f"expected one of {', '.join(SPEC_KINDS)}"
        raise UserError(f"unknown kind {kind!r}; {hint}", path, _key_line(node, ("kind",)))
    schema = _schema_for(kind)
    try:
        return schema.model_validate(data, context={"base_dir": str(Path(path).parent), "check_files": check_files})
    except ValidationError as e:
        err = e.errors()[0]
        line = _key_line(node, tuple(err["loc"])) if node is not None else 1
        raise UserError(_format_error(err, schema), path, line) from None


def load_spec(path: str | Path, overrides: list[str] = (), kind: str | None = None,
              check_files: bool = True) -> BaseModel:
    """Load and validate a YAML spec of any kind, applying `--set key.path=value` overrides first."""
    p = Path(path)
    if not p.exists():
        raise UserError(f"file not found: {p}", str(p), 1)
    data, node = _compose(p.read_text(encoding="utf-8"), str(p))
    for i, ov in enumerate(overrides):
        data = apply_override(data, ov, i + 1)
    return validate_data(data, str(p), node, kind, check_files)


def load_recipe(path: str | Path, overrides: list[str] = (), check_files: bool = True) -> Recipe:
    spec = load_spec(path, overrides, kind="recipe", check_files=check_files)
    assert isinstance(spec, Recipe)
    return spec


def apply_override(data: Any, override: str, index: int = 1) -> Any:
    """`a.b.c=value` (value parsed as YAML); list items by index (`stages.0.optim.lr=1e-4`) or, for stages,
    by type (`stages.sft.optim.lr=1e-4`)."""
    if "=" not in override:
        raise UserError(f"--set {override!r} must look like key.path=value", "--set", index)
    key, raw = override.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    parts = key.strip().split(".")
    cur = data
    for j, part in enumerate(parts[:-1]):
        if isinstance(cur, list):
            idx = _list_index(cur, part, override, index)
            cur = cur[idx]
        elif isinstance(cur, dict):
            if part not in cur or cur[part] is None:
                cur[part] = {}
            cur = cur[part]
        else:
            raise UserError(f"--set {override!r}: {'.'.join(parts[:j + 1])} is not a mapping", "--set", index)
    last = parts[-1]
    if isinstance(cur, list):
        cur[_list_index(cur, last, override, index)] = value
    elif isinstance(cur, dict):
        cur[last] = value
    else:
        raise UserError(f"--set {override!r}: cannot set a key inside a {type(cur).__name__}", "--set", index)
    return data


def _list_index(seq: list, part: str, override: str, index: int) -> int:
    if part.lstrip("-").isdigit():
        i = int(part)
        if not -len(seq) <= i < len(seq):
            raise UserError(f"--set {override!r}: index {i} is out of range (the list has {len(seq)} items)",
                            "--set", index)
        return i
    matches = [i for i, item in enumerate(seq) if isinstance(item, dict) and item.get("type") == part]
    if len(matches) != 1:
        raise UserError(f"--set {override!r}: {part!r} names {len(matches)} stages; use its index", "--set", index)
    return matches[0]


def resolved_dict(spec: BaseModel) -> dict:
    return spec.model_dump(mode="json")


def iter_spec_files(paths: list[str]) -> list[Path]:
    """YAML files under `paths` (folders recursively), sorted."""
    out: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            out += sorted(q for q in p.rglob("*") if q.suffix in (".yaml", ".yml") and q.is_file())
        elif p.exists():
            out.append(p)
        else:
            raise UserError(f"file not found: {p}", str(p), 1)
    return out
