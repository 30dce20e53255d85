"""Fixtures for the evaluation tests: the shared benchmark copies beside the repo, and a tiny hybrid model
saved locally (built from a preset; no hub access)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

SHARED_DATA = Path(__file__).parents[2].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"benchmark copies not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_eval_model(tmp_path_factory):
    """(saved model dir, model, tokenizer) of a randomly initialised tiny-hybrid."""
    from hybrid_posttrain.models import load_model

    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("tiny-eval-model")
    model, tok = load_model("tiny-hybrid", seed=0)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out, model.eval(), tok
