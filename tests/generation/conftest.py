"""Fixtures for the generation tests: a tiny hybrid model saved to a local folder (no hub access)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    from hybrid_posttrain.models import load_model

    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("tiny-hybrid")
    model, tok = load_model("tiny-hybrid", seed=0)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out
