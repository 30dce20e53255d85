"""Shared test fixtures: offline hub, one torch thread per test process, repo paths."""

import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch  # noqa: E402  (does not import triton)

# Without CUDA, Triton kernels run in their CPU interpreter. The variable must be set before anything
# imports triton (transformers and TRL do while other test folders are collected): triton's own
# library functions are made interpreted or compiled once, at its import.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture
def repo() -> Path:
    return REPO


def hpt_cmd() -> list[str]:
    return [sys.executable, "-m", "hybrid_posttrain.cli"]
