"""`hpt`: the command line. Parses arguments and dispatches; no logic of its own.

Exit status: 0 done, 1 the run failed, 2 the user's input is wrong (one line `path:line: message`).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from hybrid_posttrain.errors import UserError
from hybrid_posttrain.kernels._env import KernelEnvError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, status 2
        raise UserError(f"{self.prog}: {message}")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="hpt", description="Post-training and distillation of hybrid language models.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    v = sub.add_parser("validate", help="check recipes, teacher specs, suites and sweeps (by their kind:)")
    v.add_argument("paths", nargs="+")

    r = sub.add_parser("run", help="run a recipe")
    r.add_argument("recipe")
    r.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE")
    r.add_argument("--output-dir")
    r.add_argument("--resume", action="store_true")

    g = sub.add_parser("generate", help="generate teacher data from a generation spec")
    g.add_argument("spec")
    g.add_argument("--output-dir")
    g.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE")

    e = sub.add_parser("eval", help="evaluate a model on suites")
    e.add_argument("--model", required=True)
    e.add_argument("--suites", nargs="+", required=True)
    e.add_argument("--output-dir")
    e.add_argument("--max-items", type=int)
    e.add_argument("--backend", default="hf")
    e.add_argument("--batch-size", type=int, default=16)
    e.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                   help="override a key of every suite, e.g. toyworld.seed=1 or source=/path/to/data")

    s = sub.add_parser("sweep", help="run a teacher sweep (teachers x students x seeds)")
    s.add_argument("sweep")
    s.add_argument("--resume", action="store_true")
    s.add_argument("--output-dir")
    s.add_argument("--quick", action="store_true", help="one seed, fewer steps")
    s.add_argument("--cell", action="append", default=[], help="run only this cell id (for one job per GPU)")
    s.add_argument("--prepare", action="store_true", help="only teacher data and base models (before --cell jobs)")
    s.add_argument("--jobs", type=int, help="cells in parallel worker processes (default: the sweep's jobs)")

    rp = sub.add_parser("report", help="HTML + Markdown report from run/sweep dirs")
    rp.add_argument("dirs", nargs="+")
    rp.add_argument("--out", required=True)

    d = sub.add_parser("doctor", help="kernels, dtypes and prefill/decode agreement of a model")
    d.add_argument("model")
    d.add_argument("--kernels", default="auto")
    d.add_argument("--dtype", default="auto")

    b = sub.add_parser("bench", help="benchmarks: kernels | step")
    b.add_argument("what", choices=["kernels", "step"])
    b.add_argument("rest", nargs=argparse.REMAINDER)
    return p


COMMANDS = {
    "validate": "hybrid_posttrain.validate:main",
    "run": "hybrid_posttrain.runner:main",
    "generate": "hybrid_posttrain.distill.generate:main",
    "eval": "hybrid_posttrain.evaluation.runner:main",
    "sweep": "hybrid_posttrain.sweep:main",
    "report": "hybrid_posttrain.report:main",
    "doctor": "hybrid_posttrain.doctor:main",
    "bench": "hybrid_posttrain.bench:main",
}


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        mod, fn = COMMANDS[args.command].split(":")
        rc = getattr(importlib.import_module(mod), fn)(args)
        return int(rc or 0)
    except UserError as e:
        print(f"error: {e}" if e.path is None else str(e), file=sys.stderr)
        return 2
    except KernelEnvError as e:  # the kernels package raises its own (it imports nothing else of the package)
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
