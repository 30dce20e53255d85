"""User-facing errors.

A `UserError` is bad input from the user (a recipe key, a missing file, a malformed JSONL row, a teacher
that times out). The CLI prints it as one line `path:line: message` and exits with status 2; it never
shows a traceback for it. Code anywhere in the package raises it with the location it knows.
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input: printed as `path:line: message`, exit status 2."""

    def __init__(self, message: str, path: str | None = None, line: int | None = None):
        super().__init__(message)
        self.message = message
        self.path = path
        self.line = line

    def __str__(self) -> str:
        where = ""
        if self.path is not None:
            where = f"{self.path}:{self.line if self.line is not None else 1}: "
        return f"{where}{self.message}"
