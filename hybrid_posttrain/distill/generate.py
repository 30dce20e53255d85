"""`hpt generate SPEC`: teachers x a prompt set -> sharded JSONL, one folder and one manifest per teacher.

Layout under the output dir (`--output-dir`, else the spec's `output_dir`, `{name}` filled in):

    generation.json                 the resolved spec
    datasets.json                   row counts of the training sets below
    pairs/<A>__over__<B>.jsonl      DPO pairs teacher A (chosen) vs teacher B (rejected), when asked
    prompts.jsonl                   the prompt set (id, messages, question, answer, task, verifier, meta)
    <teacher>/run.json              what the shards belong to (teacher hash, prompt-set hash, shard size)
    <teacher>/shard-00000.jsonl     rows of prompts [0, shard_size), written atomically when complete
    <teacher>/shard-00000.stats.json  seconds and counts of that shard (throughput; not part of the rows)
    <teacher>/sft.jsonl, dpo.jsonl  SFT set (filtered by the policy) and correct-vs-incorrect DPO pairs
    <teacher>/manifest.json         spec hash, sampling, prompt-set hash, counts, token statistics,
                                    throughput, failures, accuracy by the task's verifier

A row: `{id, teacher, sample, messages, completion, correct, answer, task, verifier, n_tokens,
finish_reason, prompt_tokens, meta, gen_meta}` (+ `token_ids`, `logprobs`, `top_logprobs` as
`[[[id, logprob], ...] per token]` when the teacher captures top-k log-probs).

Resumption: a shard file exists only once complete, so a re-run skips it; a run killed at any moment
loses at most the shard in flight. Each shard's sampling seed depends only on the teacher's seed and the
shard index, so a regenerated shard holds the same rows an uninterrupted run would have written. A
teacher folder written for a different teacher spec or prompt set is refused (a UserError), never mixed.
"""

from __future__ import annotations

import datetime
import platform
import time
from pathlib import Path

from hybrid_posttrain.data.io import iter_jsonl, read_json, read_jsonl, stable_hash, write_json, write_jsonl
from hybrid_posttrain.distill.specs import GenerationSpec, PromptSet, TeacherSpec
from hybrid_posttrain.errors import UserError

TASK_VERIFIERS = {"programs": "program", "facts": "exact", "facts-mc": "exact", "math": "math", "gsm8k": "numeric"}
# teacher fields that do not change what is generated (so changing them does not invalidate finished shards)
OPERATIONAL_FIELDS = {"concurrency", "timeout_s", "max_retries", "backoff_s", "api_key_env", "endpoint", "device",
                      "gpu_memory_utilization"}


# ------------------------------------------------------------------------------------------ prompt sets

def _toyworld_rows(ps: PromptSet) -> list[dict]:
    from hybrid_posttrain.tasks.toyworld import World, program_items

    if ps.source == "toyworld:facts":
        items = World(ps.seed, ps.n_people).fact_items(ps.split, tuple(ps.attributes))
    else:
        items = program_items(ps.n_per_depth, ps.depths, seed=ps.seed, split=ps.split)
    rows = []
    for it in items:
        content = it.prompt if not ps.instruction else f"{it.prompt}\n{ps.instruction}"
        messages = ([{"role": "system", "content": ps.system_prompt}] if ps.system_prompt else []) + [
            {"role": "user", "content": content}]
        rows.append(dict(id=it.id, messages=messages, question=it.prompt, answer=it.answer, task=it.task,
                         verifier=TASK_VERIFIERS[it.task], meta=dict(it.meta)))
    return rows


def _jsonl_rows(ps: PromptSet) -> list[dict]:
    from hybrid_posttrain.tasks.verifiers import VERIFIERS

    rows, seen = [], set()
    for line, r in iter_jsonl(ps.source):
        where = (ps.source, line)
        for key in ("id", "answer"):
            if key not in r:
                raise UserError(f"prompt row is missing {key!r} (rows need id, prompt or messages, answer)", *where)
        if "messages" in r:
            msgs = r["messages"]
            if (not isinstance(msgs, list) or not msgs or not all(isinstance(m, dict) and "role" in m and "content" in m
                                                                    for m in msgs)):
                raise UserError("`messages` must be a non-empty list of {role, content}", *where)
            users = [m for m in msgs if m["role"] == "user"]
            if not users:
                raise UserError("`messages` has no user turn", *where)
            question = r.get("prompt") or users[-1]["content"]
        elif "prompt" in r:
            msgs = [{"role": "user", "content": str(r["prompt"])}]
            question = str(r["prompt"])
        else:
            raise UserError("prompt row needs `prompt` (a string) or `messages` (a chat)", *where)
        if ps.system_prompt and not any(m["role"] == "system" for m in msgs):
            msgs = [{"role": "system", "content": ps.system_prompt}] + msgs
        task = str(r.get("task") or "custom")
        verifier = r.get("verifier") or TASK_VERIFIERS.get(task, ps.verifier)
        if verifier not in VERIFIERS:
            raise UserError(f"unknown verifier {verifier!r}; expected one of {', '.join(sorted(VERIFIERS))}", *where)
        rid = str(r["id"])
        if rid in seen:
            raise UserError(f"duplicate prompt id {rid!r} (ids must be unique: rows are resumed by id)", *where)
        seen.add(rid)
        rows.append(dict(id=rid, messages=msgs, question=question, answer=str(r["answer"]), task=task,
                         verifier=verifier, meta=dict(r.get("meta") or {})))
    return rows


def load_prompt_set(ps: PromptSet) -> list[dict]:
    rows = _toyworld_rows(ps) if ps.source.startswith("toyworld:") else _jsonl_rows(ps)
    if ps.max_items is not None:
        rows = rows[: ps.max_items]
    if not rows:
        raise UserError(f"prompt set {ps.source!r} is empty")
    return rows


def prompt_set_hash(rows: list[dict]) -> str:
    return stable_hash([[r["id"], r["messages"], r["answer"], r["task"], r["verifier"]] for r in rows])


def teacher_hash(t: TeacherSpec) -> str:
    d = t.model_dump(mode="json")
    return stable_hash({k: v for k, v in d.items() if k not in OPERATIONAL_FIELDS})


# ---------------------------------------------------------------------------------------------- shards

def shard_path(teacher_dir: Path, index: int) -> Path:
    return teacher_dir / f"shard-{index:05d}.jsonl"


def _rows_for_shard(teacher: TeacherSpec, prompts: list[dict], completions: list) -> list[dict]:
    from hybrid_posttrain.tasks.verifiers import get_verifier

    out = []
    for p, comps in zip(prompts, completions, strict=False):
        verify = get_verifier(p["verifier"])
        for k, c in enumerate(comps):
            row = dict(id=p["id"], teacher=teacher.name, sample=k, messages=p["messages"], completion=c.text,
                       correct=bool(c.finish_reason != "error" and verify(c.text, p["answer"], p["question"])),
                       answer=p["answer"], task=p["task"], verifier=p["verifier"], n_tokens=int(c.n_tokens),
                       finish_reason=c.finish_reason, prompt_tokens=c.meta.get("prompt_tokens"), meta=p["meta"],
                       gen_meta={k2: v for k2, v in c.meta.items() if k2 not in ("seconds", "prompt_tokens")})
            if c.top_logprobs is not None:
                row["token_ids"] = c.token_ids
                row["logprobs"] = c.logprobs
                row["top_logprobs"] = [[[int(i), float(v)] for i, v in step.items()] for step in c.top_logprobs]
            out.append(row)
    return out


def run_teacher(teacher: TeacherSpec, prompts: list[dict], prompt_hash: str, out_dir: Path, shard_size: int,
                progress: bool = True, generator=None) -> dict:
    """Generate every missing shard of `teacher`, then write and return its manifest."""
    from tqdm.auto import tqdm

    from hybrid_posttrain.generation import make_generator

    tdir = out_dir / teacher.name
    run_info = dict(teacher=teacher.name, teacher_hash=teacher_hash(teacher), prompt_set_hash=prompt_hash,
                    shard_size=shard_size, n_prompts=len(prompts))
    if (tdir / "run.json").exists():
        old = read_json(tdir / "run.json")
        diff = [k for k in run_info if old.get(k) != run_info[k]]
        if diff:
            raise UserError(f"{tdir} holds data generated with a different {diff[0].replace('_', ' ')} for teacher "
                            f"{teacher.name!r}; use another --output-dir or remove that folder",
                            str(tdir / "run.json"), 1)
    else:
        write_json(tdir / "run.json", run_info)
    n_shards = (len(prompts) + shard_size - 1) // shard_size
    todo = [i for i in range(n_shards) if not shard_path(tdir, i).exists()]
    if todo:
        gen = generator
        if gen is None:
            gen = make_generator(teacher.backend, **teacher.generator_options())
        bar = tqdm(total=n_shards, initial=n_shards - len(todo), desc=f"{teacher.name}", unit="shard",
                   disable=not progress)
        try:
            for i in todo:
                chunk = prompts[i * shard_size:(i + 1) * shard_size]
                t0 = time.perf_counter()
                comps = gen.generate([p["messages"] for p in chunk], teacher.sampling_obj(seed_offset=i),
                                     progress=False)
                seconds = time.perf_counter() - t0
                if len(comps) != len(chunk) or any(len(c) != teacher.sampling.n for c in comps):
                    raise RuntimeError(f"backend {teacher.backend} returned the wrong number of completions")
                rows = _rows_for_shard(teacher, chunk, comps)
                # stats first, then the shard: a shard on disk always has its stats
                write_json(tdir / f"shard-{i:05d}.stats.json",
                           dict(seconds=seconds, samples=len(rows), tokens=sum(r["n_tokens"] for r in rows)))
                write_jsonl(shard_path(tdir, i), rows)
                bar.update(1)
        finally:
            bar.close()
            if generator is None:
                gen.close()
    manifest = build_manifest(teacher, tdir, n_shards, prompt_hash, len(prompts))
    write_json(tdir / "manifest.json", manifest)
    return manifest


def read_teacher_rows(teacher_dir: str | Path) -> list[dict]:
    """All rows of a teacher folder, in prompt order."""
    tdir = Path(teacher_dir)
    rows: list[dict] = []
    for p in sorted(tdir.glob("shard-*.jsonl")):
        rows += read_jsonl(p)
    return rows


def _pct(values: list[int], q: float) -> float:
    import numpy as np

    return float(np.percentile(values, q)) if values else 0.0


def build_manifest(teacher: TeacherSpec, tdir: Path, n_shards: int, prompt_hash: str, n_prompts: int) -> dict:
    from collections import Counter, defaultdict

    import hybrid_posttrain

    rows = read_teacher_rows(tdir)
    lengths = [r["n_tokens"] for r in rows]
    seconds = tokens = samples = 0.0
    for i in range(n_shards):
        st = tdir / f"shard-{i:05d}.stats.json"
        if st.exists():
            s = read_json(st)
            seconds += s["seconds"]
            tokens += s["tokens"]
            samples += s["samples"]
    by_task: dict[str, list[bool]] = defaultdict(list)
    by_depth: dict[str, list[bool]] = defaultdict(list)
    for r in rows:
        by_task[r["task"]].append(r["correct"])
        if "depth" in (r.get("meta") or {}):
            by_depth[str(r["meta"]["depth"])].append(r["correct"])
    ok = [r["correct"] for r in rows if r["finish_reason"] != "error"]
    failures = sum(r["finish_reason"] == "error" for r in rows)
    ids = Counter((r["id"], r["sample"]) for r in rows)
    return dict(
        teacher=teacher.name, backend=teacher.backend, model=teacher.model,
        spec_hash=teacher_hash(teacher), spec=teacher.model_dump(mode="json"),
        sampling=teacher.sampling.model_dump(mode="json"),
        prompt_set=dict(hash=prompt_hash, n_prompts=n_prompts),
        counts=dict(prompts=len({r["id"] for r in rows}), samples=len(rows), shards=n_shards,
                    duplicates=sum(v - 1 for v in ids.values()),
                    finish_reasons=dict(Counter(r["finish_reason"] for r in rows)), failures=failures),
        failure_rate=failures / max(1, len(rows)),
        tokens=dict(total=int(sum(lengths)), mean=(sum(lengths) / len(lengths)) if lengths else 0.0,
                    p50=_pct(lengths, 50), p95=_pct(lengths, 95), max=max(lengths) if lengths else 0),
        throughput=dict(seconds=seconds, samples_per_s=samples / seconds if seconds else None,
                        tokens_per_s=tokens / seconds if seconds else None),
        accuracy=dict(overall=(sum(ok) / len(ok)) if ok else None,
                      by_task={k: sum(v) / len(v) for k, v in sorted(by_task.items())},
                      by_depth={k: sum(v) / len(v) for k, v in sorted(by_depth.items(), key=lambda kv: int(kv[0]))}),
        complete=len(rows) == n_prompts * teacher.sampling.n,
        created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        versions=dict(hybrid_posttrain=getattr(hybrid_posttrain, "__version__", "0"), python=platform.python_version()),
    )


# ------------------------------------------------------------------------------------------------ entry

def generate(spec: GenerationSpec, output_dir: str | Path | None = None, progress: bool = True) -> dict[str, dict]:
    """Run every teacher of `spec`; returns {teacher name: manifest}."""
    out = Path(output_dir or spec.output_dir.format(name=spec.name))
    prompts = load_prompt_set(spec.prompts)
    phash = prompt_set_hash(prompts)
    write_json(out / "generation.json", spec.model_dump(mode="json"))
    write_jsonl(out / "prompts.jsonl", prompts)
    manifests = {}
    for teacher in spec.resolved_teachers():
        if (teacher.backend == "program" and spec.prompts.source == "toyworld:facts"
                and "world_seed" not in teacher.model_fields_set):
            # answer facts from the world the prompts came from
            teacher = teacher.model_copy(update=dict(world_seed=spec.prompts.seed, n_people=spec.prompts.n_people))
        manifests[teacher.name] = run_teacher(teacher, prompts, phash, out, spec.shard_size, progress)
    from hybrid_posttrain.distill.datasets import write_datasets

    counts = write_datasets(out, spec.datasets, list(manifests))
    for name, m in manifests.items():  # the manifest also says what training sets came out
        m["datasets"] = counts.get(name, {})
        write_json(out / name / "manifest.json", m)
    write_json(out / "datasets.json", counts)
    return manifests


def summary_table(manifests: dict[str, dict]) -> str:
    head = f"{'teacher':<18} {'backend':<8} {'samples':>7} {'fail':>5} {'acc':>6} {'tok mean':>8} {'p50':>6} {'p95':>6} {'tok/s':>9}"
    lines = [head, "-" * len(head)]
    for name, m in manifests.items():
        acc = m["accuracy"]["overall"]
        tps = m["throughput"]["tokens_per_s"]
        lines.append(f"{name:<18} {m['backend']:<8} {m['counts']['samples']:>7} {m['counts']['failures']:>5} "
                     f"{(f'{acc:.3f}' if acc is not None else '-'):>6} {m['tokens']['mean']:>8.1f} "
                     f"{m['tokens']['p50']:>6.0f} {m['tokens']['p95']:>6.0f} "
                     f"{(f'{tps:.0f}' if tps else '-'):>9}")
    return "\n".join(lines)


def load_generation_spec(path: str | Path, overrides: list[str] = ()) -> GenerationSpec:
    """Load a generation spec; `--set teachers.N.key=value` also reaches teachers given as file paths (they are
    inlined first, so their errors then point at the generation spec)."""
    import yaml

    from hybrid_posttrain.recipe import _compose, apply_override, load_spec, validate_data

    if not any(o.split("=", 1)[0].startswith("teachers.") for o in overrides):
        spec = load_spec(path, list(overrides), kind="generation")
    else:
        p = Path(path)
        if not p.exists():
            raise UserError(f"file not found: {p}", str(p), 1)
        data, node = _compose(p.read_text(encoding="utf-8"), str(p))
        if isinstance(data, dict) and isinstance(data.get("teachers"), list):
            for i, t in enumerate(data["teachers"]):
                if isinstance(t, str):
                    tp = Path(t) if Path(t).is_absolute() or Path(t).exists() else p.parent / t
                    if tp.exists():
                        data["teachers"][i] = yaml.safe_load(tp.read_text(encoding="utf-8"))
        for i, ov in enumerate(overrides):
            data = apply_override(data, ov, i + 1)
        spec = validate_data(data, str(p), node, "generation")
    assert isinstance(spec, GenerationSpec)
    return spec


def main(args) -> int:
    spec = load_generation_spec(args.spec, getattr(args, "overrides", []) or [])
    out = Path(args.output_dir or spec.output_dir.format(name=spec.name))
    manifests = generate(spec, out)
    print(summary_table(manifests))
    print(f"wrote {out}")
    bad = [n for n, m in manifests.items() if m["failure_rate"] > spec.max_failure_rate]
    if bad:
        print(f"teachers over max_failure_rate={spec.max_failure_rate}: {', '.join(bad)}")
        return 1
    return 0
