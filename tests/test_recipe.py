"""Recipes: every shipped YAML validates; bad input gives one line `file:line: ...` and exit status 2."""

import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from hybrid_posttrain.errors import UserError
from hybrid_posttrain.recipe import iter_spec_files, load_recipe, load_spec

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("path", iter_spec_files([str(REPO / "recipes")]), ids=lambda p: str(p.relative_to(REPO)))
def test_every_recipe_validates(path):
    spec = load_spec(path)
    assert spec.kind == "recipe"


def test_cli_validate_every_shipped_spec():
    """Recipes, teacher specs, generation specs, sweeps (demo and real-model) and eval suites."""
    r = subprocess.run([sys.executable, "-m", "hybrid_posttrain.cli", "validate", "recipes", "teachers", "evals"],
                       cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    n = len(iter_spec_files([str(REPO / d) for d in ("recipes", "teachers", "evals")]))
    assert r.stdout.strip() == f"{n}/{n} specs valid"


GOOD = """kind: recipe
name: t
model:
  name: tiny-hybrid
stages:
  - type: sft
    data:
      train: toyworld:mixed
    optim:
      lr: 1.0e-3
"""

BAD = [
    (GOOD.replace("      lr: 1.0e-3", "      lrr: 1.0e-3"), 10, "unknown key 'stages.0.optim.lrr'; did you mean 'lr'?"),
    (GOOD.replace("      lr: 1.0e-3", "      lr: fast"), 10, "stages.0.optim.lr: Input should be a valid number"),
    (GOOD.replace("toyworld:mixed", "missing.jsonl"), 8, "data file 'missing.jsonl' does not exist"),
    (GOOD.replace("  name: tiny-hybrid", "  nme: tiny-hybrid"), 4, "unknown key 'model.nme'; did you mean 'name'?"),
    (GOOD.replace("type: sft", "type: sfft"), 6, "does not match any of the expected tags"),
    (GOOD.replace("    data:\n      train: toyworld:mixed\n", ""), 6, "missing required key 'stages.0.data'"),
    (GOOD.replace("toyworld:mixed", "toyworld:nope"), 8, "unknown toyworld source 'nope'"),
    ("kind: recipie\nname: x\n", 1, "unknown kind 'recipie'; did you mean 'recipe'?"),
    ("kind: recipe\nname: x: y\n", 2, "malformed YAML"),
]


@pytest.mark.parametrize("text,line,message", BAD)
def test_bad_recipe_errors_name_file_and_line(tmp_path, text, line, message):
    p = tmp_path / "r.yaml"
    p.write_text(text)
    with pytest.raises(UserError) as e:
        load_spec(p)
    assert str(e.value).startswith(f"{p}:{line}: "), str(e.value)
    assert message in str(e.value)


def test_cli_user_error_is_one_line_exit_2(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text(BAD[0][0])
    r = subprocess.run([sys.executable, "-m", "hybrid_posttrain.cli", "run", str(p)], cwd=REPO,
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "Traceback" not in r.stderr
    assert r.stderr.strip() == f"{p}:10: unknown key 'stages.0.optim.lrr'; did you mean 'lr'?"
    r = subprocess.run([sys.executable, "-m", "hybrid_posttrain.cli", "run", str(tmp_path / "nope.yaml")],
                       cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 2 and "file not found" in r.stderr


def test_overrides_apply_and_are_checked(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text(GOOD)
    r = load_recipe(p, ["stages.sft.optim.lr=5e-4", "stages.0.data.max_length=64", "model.name=tiny-dense"])
    assert r.stages[0].optim.lr == 5e-4 and r.stages[0].data.max_length == 64 and r.model.name == "tiny-dense"
    assert r.stages[0].optim.epochs == 1.0  # defaults live in the schema
    with pytest.raises(UserError, match="--set:1: --set 'stages.3.optim.lr=1' : index 3 is out of range|index 3"):
        load_recipe(p, ["stages.3.optim.lr=1"])
    with pytest.raises(UserError, match="must look like key.path=value"):
        load_recipe(p, ["stages"])


def test_recipe_is_frozen(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text(GOOD)
    r = load_recipe(p)
    with pytest.raises(ValidationError, match="frozen"):
        r.seed = 3
