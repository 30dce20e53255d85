"""`hpt eval` end to end: output layout, per-item rows, summary with CIs and by-depth accuracy, caching
(a re-run generates nothing; a changed spec re-runs), and one-line user errors."""

from __future__ import annotations

import json

import pytest

from hybrid_posttrain.cli import main as hpt
from hybrid_posttrain.evaluation.runner import evaluate
from hybrid_posttrain.generation import make_generator


class Counting:
    """Wraps a generator and counts the prompts it is asked for."""

    def __init__(self, inner):
        self.inner = inner
        self.name = inner.name
        self.prompts = 0

    def generate(self, prompts, sampling, progress=True):
        self.prompts += len(prompts)
        return self.inner.generate(prompts, sampling, progress=progress)

    def close(self):
        pass


def _rows(path):
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def test_program_teacher_scores_perfectly_and_noisy_one_degrades_with_depth(tmp_path):
    out = tmp_path / "out"
    perfect = Counting(make_generator("program", style="cot", world_seed=0))
    s = evaluate("program-cot", ["toyworld-facts", "toyworld-programs"], out, generator=perfect, progress=False,
                 max_items=44)
    assert s["suites"]["toyworld-facts"]["value"] == 1.0 and s["suites"]["toyworld-programs"]["value"] == 1.0
    assert perfect.prompts == 88
    noisy = make_generator("program", style="noisy-cot", slip_rate=0.3, world_seed=0)
    s = evaluate("program-noisy", ["toyworld-programs"], tmp_path / "noisy", generator=noisy, progress=False,
                 overrides=["toyworld.n_per_depth=30"])
    e = s["suites"]["toyworld-programs"]
    assert e["category"] == "reasoning" and e["n"] == 330 and set(e["by_depth"]) == {str(d) for d in range(2, 13)}
    assert e["by_depth"]["2"]["value"] > e["by_depth"]["12"]["value"] + 0.3
    assert e["ci_low"] < e["value"] < e["ci_high"]
    rows = _rows(tmp_path / "noisy" / "toyworld-programs" / "results.jsonl")
    wrong = next(r for r in rows if not r["correct"])
    assert {"id", "prompt", "output", "extracted", "gold", "correct", "depth"} <= set(wrong)
    assert wrong["extracted"] != wrong["gold"] and wrong["output"].endswith(f"Answer: {wrong['extracted']}")


def test_hf_eval_layout_and_cache(tiny_eval_model, tmp_path):
    model_dir, model, tok = tiny_eval_model
    out = tmp_path / "eval"
    gen = Counting(make_generator("hf", model=model, tokenizer=tok, batch_size=8))
    kw = dict(model=model, tokenizer=tok, generator=gen, progress=False, batch_size=8)
    over = ["generation.max_new_tokens=6"]
    s = evaluate(str(model_dir), ["toyworld-facts", "toyworld-facts-mc", "toyworld-programs"], out,
                 max_items=11, overrides=over, **kw)
    assert gen.prompts == 22
    assert set(s["suites"]) == {"toyworld-facts", "toyworld-facts-mc", "toyworld-programs"}
    for name, e in s["suites"].items():
        assert {"category", "metric", "value", "ci_low", "ci_high", "n"} <= set(e) and e["n"] == 11
        assert len(_rows(out / name / "results.jsonl")) == 11
    assert s["suites"]["toyworld-facts-mc"]["metric"] == "acc"
    assert s["suites"]["toyworld-programs"]["by_depth"].keys() == {str(d) for d in range(2, 13)}
    assert json.loads((out / "summary.json").read_text()) == s

    # a re-run generates nothing; more items generate only the new ones; a torn last line is tolerated
    with open(out / "toyworld-facts" / "results.jsonl", "a") as f:
        f.write('{"id": "torn')
    gen.prompts = 0
    evaluate(str(model_dir), ["toyworld-facts", "toyworld-programs"], out, max_items=11, overrides=over, **kw)
    assert gen.prompts == 0
    evaluate(str(model_dir), ["toyworld-facts"], out, max_items=13, overrides=over, **kw)
    assert gen.prompts == 2 and len(_rows(out / "toyworld-facts" / "results.jsonl")) == 13
    # a changed spec (another world) invalidates the cache
    evaluate(str(model_dir), ["toyworld-facts"], out, max_items=4, overrides=over + ["toyworld.seed=5"], **kw)
    assert gen.prompts == 6
    assert all(r["id"].startswith("facts-5-") for r in _rows(out / "toyworld-facts" / "results.jsonl"))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["suites"]["toyworld-facts"]["n"] == 4 and "toyworld-facts-mc" in summary["suites"]


def test_cli_eval_and_user_errors(tiny_eval_model, tmp_path, capsys):
    model_dir, _, _ = tiny_eval_model
    rc = hpt(["eval", "--model", str(model_dir), "--suites", "toyworld-facts-mc", "--max-items", "4",
              "--output-dir", str(tmp_path / "o"), "--batch-size", "4"])
    assert rc == 0 and (tmp_path / "o" / "summary.json").exists()
    assert "toyworld-facts-mc" in capsys.readouterr().out
    assert hpt(["eval", "--model", str(tmp_path / "missing"), "--suites", "toyworld-facts"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "does not exist" in err
    assert hpt(["eval", "--model", str(model_dir), "--suites", "nosuch-suite"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "unknown suite 'nosuch-suite'" in err and "toyworld-facts" in err
    assert hpt(["eval", "--model", str(model_dir), "--suites", "toyworld-facts", "--set", "grader=fuzzy"]) == 2
    assert "unknown grader" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["toyworld-facts", "toyworld-facts-mc", "toyworld-programs", "mmlu", "gsm8k", "bbh"])
def test_shipped_suites_validate(name, capsys):
    from hybrid_posttrain.evaluation.suites import resolve_suite

    spec, path = resolve_suite(name)
    assert spec.name == name == path.stem
    assert hpt(["validate", str(path)]) == 0
