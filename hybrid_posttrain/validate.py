"""`hpt validate PATH...`: validate every YAML spec under the paths (recipes, teachers, suites, sweeps).

Each file is checked against the schema its `kind:` names; the first problem in a file is reported as
`file:line: message`. Exit 2 if any file is invalid.
"""

from __future__ import annotations

import sys

from hybrid_posttrain.errors import UserError
from hybrid_posttrain.recipe import iter_spec_files, load_spec


def validate_paths(paths: list[str]) -> list[UserError]:
    errors = []
    for f in iter_spec_files(paths):
        try:
            load_spec(f)
        except UserError as e:
            errors.append(e)
    return errors


def main(args) -> int:
    files = iter_spec_files(args.paths)
    errors = validate_paths(args.paths)
    for e in errors:
        print(str(e), file=sys.stderr)
    print(f"{len(files) - len(errors)}/{len(files)} specs valid")
    return 2 if errors else 0
