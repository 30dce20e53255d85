"""Loaders read the real benchmark formats (the copies in ../shared/data) and name file and line of a
malformed row."""

from __future__ import annotations

import json

import pytest

from hybrid_posttrain.errors import UserError
from hybrid_posttrain.evaluation.loaders import (
    build_prompt,
    limit_items,
    load_bbh,
    load_gsm8k,
    load_items_jsonl,
    load_mmlu,
    load_suite_items,
)
from hybrid_posttrain.evaluation.suites import SuiteSpec, resolve_suite

# ------------------------------------------------------------------------------------------ real files

def test_gsm8k_real_file(shared_data):
    path = shared_data / "gsm8k" / "test.jsonl"
    items = load_gsm8k(path)
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(items) == len([x for x in lines if x.strip()])
    for it in items[:5]:
        row = json.loads(lines[it.meta["line"] - 1])
        assert it.fields["question"] == row["question"].strip()
        assert it.gold == row["answer"].split("####")[-1].strip().replace(",", "")
        assert "<<" not in it.meta["solution"]
        assert it.meta["solution"].endswith("#### " + row["answer"].split("####")[-1].strip())
    assert items[0].gold == "18"  # Janet's ducks


def test_mmlu_real_file(shared_data):
    items = load_mmlu(shared_data / "mmlu" / "test", subsets=["abstract_algebra"])
    assert len(items) == 100
    first = items[0]
    assert first.subset == "abstract_algebra" and first.choices == ["A", "B", "C", "D"]
    assert first.fields["question"].startswith("Find the degree for the given field extension")
    assert first.gold == "B" and first.gold_index == 1
    assert first.fields["options"].splitlines()[1] == "B. 4"
    # a quoted field with a comma ("0,1") stays one choice
    assert items[2].meta["choice_texts"][2] == "0,1"


def test_bbh_real_files(shared_data):
    items = load_bbh(shared_data / "bbh", subsets=["date_understanding", "boolean_expressions"])
    tasks = {it.subset for it in items}
    assert tasks == {"date_understanding", "boolean_expressions"}
    date = [it for it in items if it.subset == "date_understanding"]
    assert len(date) == 250 and date[0].gold == "(B)"
    pre = date[0].fields["preamble"]
    assert "canary" not in pre.lower() and pre.count("Q: ") == 3 and "So the answer is" in pre


def test_suite_prompts_on_real_data(shared_data):
    spec, f = resolve_suite("mmlu", [f"source={shared_data / 'mmlu' / 'test'}", "subsets=[anatomy]"])
    items, shots = load_suite_items(spec, f)
    assert len(shots["anatomy"]) == 5 and len(items) == 135 - 5  # few-shot rows held out
    prompt = build_prompt(spec, items[0], shots)
    assert prompt.startswith("The following are multiple choice questions (with answers) about anatomy.\n\n")
    assert prompt.count("\nAnswer:") == 6 and prompt.endswith("\nAnswer:")
    spec, f = resolve_suite("gsm8k", [f"source={shared_data / 'gsm8k' / 'test.jsonl'}"])
    items, shots = load_suite_items(spec, f)
    p = build_prompt(spec, items[0], shots)
    assert p.count("Question: ") == 5 and p.count("#### ") == 4 and p.endswith("\nAnswer:")
    spec, f = resolve_suite("bbh", [f"source={shared_data / 'bbh'}", "subsets=[navigate]"])
    items, shots = load_suite_items(spec, f)
    assert len(items) == 40
    p = build_prompt(spec, items[0], shots)
    assert p.endswith("A: Let's think step by step.") and p.count("Q: ") == 4


# ---------------------------------------------------------------------------------------- malformed rows

def test_gsm8k_malformed_rows(tmp_path):
    good = json.dumps({"question": "1+1?", "answer": "1+1=2\n#### 2"})
    p = tmp_path / "test.jsonl"
    p.write_text(good + "\n" + good + "\n{not json\n")
    with pytest.raises(UserError) as e:
        load_gsm8k(p)
    assert e.value.path == str(p) and e.value.line == 3 and str(e.value).startswith(f"{p}:3: ")
    p.write_text(good + "\n" + json.dumps({"question": "q", "answer": "no final answer"}) + "\n")
    with pytest.raises(UserError, match="####") as e:
        load_gsm8k(p)
    assert e.value.line == 2
    p.write_text(json.dumps({"question": "q"}) + "\n")
    with pytest.raises(UserError, match="answer") as e:
        load_gsm8k(p)
    assert e.value.line == 1


def test_mmlu_malformed_rows(tmp_path):
    d = tmp_path / "test"
    d.mkdir()
    f = d / "toy_test.csv"
    # row 2 spans two physical lines (a quoted newline), so the bad row starts on line 4
    f.write_text('q1,a,b,c,d,A\n"multi\nline q",a,b,c,d,B\nq3,a,b,c,D\n')
    with pytest.raises(UserError, match="5 fields") as e:
        load_mmlu(tmp_path)
    assert e.value.path == str(f) and e.value.line == 4
    f.write_text("q1,a,b,c,d,A\nq2,a,b,c,d,E\n")
    with pytest.raises(UserError, match="'E'") as e:
        load_mmlu(d)
    assert e.value.line == 2
    f.write_text('q1,a,b,c,d,A\n"multi\nline q",a,b,c,d,B\n')
    items = load_mmlu(f)
    assert [it.meta["line"] for it in items] == [1, 2] and items[1].fields["question"] == "multi\nline q"


def test_bbh_malformed_rows(tmp_path):
    (tmp_path / "tasks").mkdir()
    (tmp_path / "cot-prompts").mkdir()
    (tmp_path / "cot-prompts" / "toy.txt").write_text("canary\n-----\nDo it.\n\nQ: x\nA: So the answer is y.")
    task = tmp_path / "tasks" / "toy.json"
    data = {"canary": "c", "examples": [{"input": "a", "target": "b"}, {"input": "c", "target": "d"},
                                        {"input": "e"}]}
    task.write_text(json.dumps(data, indent=2))
    with pytest.raises(UserError, match="example 2") as e:
        load_bbh(tmp_path)
    lines = task.read_text().splitlines()
    assert e.value.path == str(task)
    assert lines[e.value.line - 1].strip() == "{" and '"e"' in lines[e.value.line]
    task.write_text('{"examples": [\n{"input": "a", "target": "b"},\n{"input": "c" "target": "d"}]}')
    with pytest.raises(UserError, match="malformed BBH JSON") as e:
        load_bbh(tmp_path)
    assert e.value.line == 3
    task.write_text(json.dumps({"examples": [{"input": "a", "target": "b"}]}))
    (tmp_path / "cot-prompts" / "toy.txt").unlink()
    with pytest.raises(UserError, match="chain-of-thought prompt"):
        load_bbh(tmp_path)


def test_items_jsonl_and_missing_source(tmp_path):
    p = tmp_path / "items.jsonl"
    p.write_text(json.dumps({"id": "x", "prompt": "2+2?", "answer": "4", "choices": ["3", "4"]}) + "\n"
                 + json.dumps({"id": "y", "prompt": "?", "answer": "5", "choices": ["3", "4"]}) + "\n")
    with pytest.raises(UserError, match="not one of the choices") as e:
        load_items_jsonl(p)
    assert e.value.line == 2
    spec = SuiteSpec(name="m", category="knowledge", type="generative", source=str(tmp_path / "nope.jsonl"))
    with pytest.raises(UserError, match="not found"):
        load_suite_items(spec)


# ------------------------------------------------------------------------------------------- toyworld

def test_toyworld_seed_and_round_robin_limit():
    a, _ = resolve_suite("toyworld-facts")
    b, _ = resolve_suite("toyworld-facts", ["toyworld.seed=3"])
    ia, _ = load_suite_items(a)
    ib, _ = load_suite_items(b)
    assert len(ia) == len(ib) == 240 and not {i.id for i in ia} & {i.id for i in ib}
    spec, _ = resolve_suite("toyworld-programs")
    items, _ = load_suite_items(spec)
    assert sorted({it.meta["depth"] for it in items}) == list(range(2, 13)) and len(items) == 220
    picked = limit_items(items, 22)
    assert sorted(it.meta["depth"] for it in picked) == sorted(list(range(2, 13)) * 2)


def test_suite_spec_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: suite\nname: x\ncategory: knowledge\ntype: generative\nsource: toyworld:facts\n"
                   "grader: fuzzy\n")
    with pytest.raises(UserError, match="unknown grader 'fuzzy'") as e:
        resolve_suite(str(bad))
    assert e.value.line == 6
    with pytest.raises(UserError, match="unknown suite 'nosuch'"):
        resolve_suite("nosuch")


def test_hf_source_rows_are_read_by_format(monkeypatch):
    """`hf:<dataset>[:config][:split]` goes through datasets.load_dataset (faked here: no hub in tests)."""
    import datasets

    calls = []

    def fake_load(name, config=None, split=None):
        calls.append((name, config, split))
        if name == "gsm8k":
            return [{"question": "1+1?", "answer": "1+1=<<1+1=2>>2\n#### 2"}]
        return [{"question": "Q?", "choices": ["w", "x", "y", "z"], "answer": 2, "subject": "anatomy"}]

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    spec = SuiteSpec(name="g", category="reasoning", type="generative", source="hf:gsm8k:main:test", format="gsm8k")
    items, _ = load_suite_items(spec)
    assert calls[-1] == ("gsm8k", "main", "test") and items[0].gold == "2"
    assert items[0].meta["solution"] == "1+1=2\n#### 2"
    spec = SuiteSpec(name="m", category="knowledge", type="multiple_choice", source="hf:cais/mmlu:anatomy",
                     format="mmlu")
    items, _ = load_suite_items(spec)
    assert calls[-1] == ("cais/mmlu", "anatomy", "test")
    assert items[0].gold == "C" and items[0].gold_index == 2 and items[0].fields["options"].endswith("D. z")
