"""`hpt bench kernels|step [ARGS...]`: run the benchmark scripts of a repository checkout.

`kernels` is `benchmarks/gdn.py` (GDN kernels vs flash-linear-attention vs the torch fallback) and `step`
is `benchmarks/train_step.py` (one training step of the 1.33B hybrid, baseline vs our fast path); ARGS
go to the script (`hpt bench step --help`). Benchmarks print tables; they are never asserted in tests.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from hybrid_posttrain.errors import UserError

SCRIPTS = {"kernels": "gdn.py", "step": "train_step.py"}


def main(args) -> int:
    script = Path(__file__).resolve().parents[1] / "benchmarks" / SCRIPTS[args.what]
    if not script.exists():
        raise UserError(f"benchmark script {script} not found: `hpt bench` runs from a checkout of the repository "
                        f"(pip install -e .)")
    rest = [a for a in args.rest if a != "--"]
    return subprocess.call([sys.executable, str(script), *rest])
