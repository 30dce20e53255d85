"""JSONL and JSON I/O with atomic writes, and row validation with file:line errors.

Every write goes to a temporary file in the same folder, is fsynced, then renamed over the target, so a
killed process leaves either the old file or the new one, never half of one. Readers report a malformed
row as a `UserError` naming the file and line.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from hybrid_posttrain.errors import UserError


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    p = Path(path)
    if not p.exists():
        raise UserError(f"file not found: {p}", str(p), 1)
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise UserError(f"malformed JSON: {e.msg}", str(p), e.lineno) from None


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict]) -> int:
    lines = [json.dumps(r, ensure_ascii=False, default=str) for r in rows]
    atomic_write_text(path, "".join(line + "\n" for line in lines))
    return len(lines)


def append_jsonl(path: str | os.PathLike, row: dict) -> None:
    """Append one row and fsync (for logs such as metrics.jsonl, where a partial last line is tolerated)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with open(p, "a", encoding="utf-8") as f:
        f.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
        f.flush()
        os.fsync(f.fileno())


def iter_jsonl(path: str | os.PathLike, tolerate_partial_last: bool = False) -> Iterator[tuple[int, dict]]:
    """(line number, row) for each non-empty line; a malformed row is a UserError naming file and line."""
    p = Path(path)
    if not p.exists():
        raise UserError(f"file not found: {p} (check the path)", str(p), 1)
    lines = p.read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            if tolerate_partial_last and i == len(lines):
                return
            raise UserError(f"malformed JSON row: {e.msg} (each line must be one JSON object)", str(p), i) from None
        if not isinstance(row, dict):
            raise UserError(f"row is a {type(row).__name__}, expected a JSON object", str(p), i)
        yield i, row


def read_jsonl(path: str | os.PathLike, required: Iterable[str] = ()) -> list[dict]:
    """All rows; each must have the `required` fields (else a UserError naming file, line and field)."""
    rows = []
    req = list(required)
    for line, row in iter_jsonl(path):
        missing = [k for k in req if k not in row]
        if missing:
            raise UserError(f"row is missing field {missing[0]!r} (rows need {', '.join(req)})", str(path), line)
        rows.append(row)
    return rows


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def stable_hash(obj: Any) -> str:
    """A short content hash of a JSON-able object (spec hashes, prompt-set hashes)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]
