"""Kernel tests: without CUDA, run Triton through its CPU interpreter.

TRITON_INTERPRET must be set before any @triton.jit function is created, so it is set here, at import.
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
