"""`hpt generate` with the program teachers: the demo spec, manifests, resumption, refusals, JSONL prompts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hybrid_posttrain.cli import main as hpt
from hybrid_posttrain.data.io import read_jsonl, write_jsonl
from hybrid_posttrain.distill.generate import read_teacher_rows
from hybrid_posttrain.errors import UserError
from hybrid_posttrain.recipe import load_spec

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "teachers" / "demo.yaml"


def manifest(out: Path, teacher: str) -> dict:
    return json.loads((out / teacher / "manifest.json").read_text())


def test_demo_spec_runs_and_manifests_show_statistics(tmp_path, capsys):
    out = tmp_path / "demo"
    assert hpt(["generate", str(DEMO), "--output-dir", str(out), "--set", "prompts.n_per_depth=6"]) == 0
    table = capsys.readouterr().out
    styles = ["program-terse", "program-cot", "program-tracker", "program-noisy-cot"]
    for t in styles:
        assert t in table
        m = manifest(out, t)
        n = m["sampling"]["n"]
        assert m["counts"]["samples"] == 30 * n and m["counts"]["prompts"] == 30 and m["complete"]
        assert m["counts"]["duplicates"] == 0 and m["counts"]["failures"] == 0
        assert 0 < m["tokens"]["p50"] <= m["tokens"]["p95"] <= m["tokens"]["max"]
        assert m["throughput"]["tokens_per_s"] > 0 and m["prompt_set"]["hash"] and m["spec_hash"]
        assert set(m["accuracy"]["by_depth"]) == {"2", "3", "4", "5", "6"}
        rows = read_teacher_rows(out / t)
        assert len(rows) == m["counts"]["samples"]
        assert m["tokens"]["mean"] == pytest.approx(sum(r["n_tokens"] for r in rows) / len(rows))
        assert m["accuracy"]["overall"] == pytest.approx(sum(r["correct"] for r in rows) / len(rows))
        r = rows[0]
        assert {"id", "teacher", "sample", "messages", "completion", "correct", "n_tokens"} <= set(r)
        assert r["messages"][-1]["role"] == "user" and r["teacher"] == t
    means = [manifest(out, t)["tokens"]["mean"] for t in styles[:3]]
    assert means == sorted(means)  # terse < cot < tracker
    for t in styles[:3]:
        assert manifest(out, t)["accuracy"]["overall"] == 1.0
    assert manifest(out, "program-noisy-cot")["accuracy"]["overall"] < 1.0
    counts = json.loads((out / "datasets.json").read_text())
    assert counts["program-noisy-cot"]["dpo"] > 0 and counts["program-cot__over__program-noisy-cot"] > 0
    sft = read_jsonl(out / "program-noisy-cot" / "sft.jsonl")
    assert sft and all(r["correct"] and r["messages"][-1]["role"] == "assistant" for r in sft)


def test_rerun_skips_finished_shards_and_resumes_a_partial_run(tmp_path):
    spec = load_spec(DEMO, ["prompts.n_per_depth=4", "shard_size=3"])
    from hybrid_posttrain.distill.generate import generate

    full = tmp_path / "full"
    generate(spec, full, progress=False)
    part = tmp_path / "part"
    generate(spec, part, progress=False)
    tdir = part / "program-noisy-cot"
    shards = sorted(tdir.glob("shard-*.jsonl"))
    assert len(shards) == 7
    # a run killed mid-way: some shards gone, and a stray temp file left by the atomic writer
    for p in shards[2:5]:
        p.unlink()
    (tdir / ".shard-00003.jsonl.abc.tmp").write_text('{"partial": ')
    before = {p: p.stat().st_mtime_ns for p in sorted(tdir.glob("shard-*.jsonl"))}
    generate(spec, part, progress=False)
    for p, t in before.items():
        assert p.stat().st_mtime_ns == t  # finished shards are not rewritten
    for t in ["program-terse", "program-cot", "program-tracker", "program-noisy-cot"]:
        assert read_teacher_rows(part / t) == read_teacher_rows(full / t)


def test_a_folder_from_another_spec_is_refused(tmp_path):
    from hybrid_posttrain.distill.generate import generate

    out = tmp_path / "o"
    generate(load_spec(DEMO, ["prompts.n_per_depth=2"]), out, progress=False)
    with pytest.raises(UserError, match="different prompt set hash"):
        generate(load_spec(DEMO, ["prompts.n_per_depth=3"]), out, progress=False)
    spec = tmp_path / "g.yaml"
    spec.write_text("kind: generation\nname: g\nteachers:\n  - {name: program-terse, backend: program, model: terse, "
                    "sampling: {max_new_tokens: 7}}\nprompts: {source: 'toyworld:programs', n_per_depth: 2}\n")
    with pytest.raises(UserError, match="different teacher hash"):
        generate(load_spec(spec), out, progress=False)


def test_jsonl_prompt_set_and_facts(tmp_path):
    from hybrid_posttrain.tasks.toyworld import World, program_items

    items = program_items(2, [3], seed=4) + World(0).fact_items("train")[:3]
    rows = [{"id": it.id, "prompt": it.prompt, "answer": it.answer, "task": it.task} for it in items]
    rows.append({"id": "chat-1", "messages": [{"role": "system", "content": "Be brief."},
                                               {"role": "user", "content": items[0].prompt}],
                 "answer": items[0].answer, "task": "programs"})
    rows.append({"id": "other", "prompt": "What is 2+2?", "answer": "4", "task": "arith", "verifier": "numeric"})
    write_jsonl(tmp_path / "p.jsonl", rows)
    (tmp_path / "g.yaml").write_text("kind: generation\nname: j\nteachers: [../../teachers/program-cot.yaml]\n"
                                     "prompts: {source: p.jsonl}\nshard_size: 2\n")
    spec = tmp_path / "g.yaml"
    spec.write_text(spec.read_text().replace("../../teachers/program-cot.yaml", str(REPO / "teachers/program-cot.yaml")))
    assert hpt(["generate", str(spec), "--output-dir", str(tmp_path / "o")]) == 0
    got = {r["id"]: r for r in read_teacher_rows(tmp_path / "o" / "program-cot")}
    assert len(got) == len(rows)
    assert all(got[r["id"]]["correct"] for r in rows[:-1])  # programs and facts answered from the world
    assert got["other"]["finish_reason"] == "error" and not got["other"]["correct"]
    assert manifest(tmp_path / "o", "program-cot")["counts"]["failures"] == 1


def test_bad_prompt_rows_and_specs_are_one_line_errors(tmp_path, capsys):
    (tmp_path / "p.jsonl").write_text('{"id": "a", "prompt": "x", "answer": "1"}\n{"id": "b", "answer": "2"}\n')
    (tmp_path / "g.yaml").write_text(f"kind: generation\nname: j\nteachers: [{REPO / 'teachers/program-cot.yaml'}]\n"
                                     "prompts: {source: p.jsonl}\n")
    assert hpt(["generate", str(tmp_path / "g.yaml"), "--output-dir", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"{tmp_path / 'p.jsonl'}:2:") and "prompt" in err and "\n" not in err
    (tmp_path / "t.yaml").write_text("kind: teacher\nname: x\nbackend: hf\nmodel: m\nslip_rate: 0.3\n")
    assert hpt(["validate", str(tmp_path / "t.yaml")]) == 2
    assert "t.yaml:5:" in capsys.readouterr().err
    (tmp_path / "o.yaml").write_text("kind: teacher\nname: x\nbackend: openai\nmodel: m\n")
    assert hpt(["validate", str(tmp_path / "o.yaml")]) == 2
    assert "endpoint" in capsys.readouterr().err


def test_teacher_yamls_validate():
    for p in sorted((REPO / "teachers").glob("*.yaml")):
        load_spec(p, check_files=False)


def test_set_reaches_teachers_given_by_path(tmp_path):
    out = tmp_path / "o"
    assert hpt(["generate", str(DEMO), "--output-dir", str(out), "--set", "prompts.n_per_depth=3",
                "--set", "teachers.3.slip_rate=1.0", "--set", "teachers.3.sampling.n=2"]) == 0
    m = manifest(out, "program-noisy-cot")
    assert m["spec"]["slip_rate"] == 1.0 and m["counts"]["samples"] == 30
    assert m["accuracy"]["by_depth"]["6"] < 0.5
    assert manifest(out, "program-cot")["spec"]["sampling"]["n"] == 1
