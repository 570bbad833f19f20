"""Read JSON-lines files with errors that name the file and line (the one JSONL reader of the package)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from synthforge.errors import UserError
from synthforge.files import read_text


def iter_json_lines(path: Path, what: str = "JSONL file") -> Iterator[tuple[int, Any]]:
    """(line number, JSON value) of every non-blank line; a line that isn't JSON is named by file and line.

    Lines end at "\n" only: JSON strings may hold U+2028, U+0085 and other characters that
    ``str.splitlines`` would break a row at (``json.dumps(..., ensure_ascii=False)`` writes them raw)."""
    for number, line in enumerate(read_text(path, what).split("\n"), 1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}:{number}: not a JSON line ({exc.msg})") from None


def read_jsonl(path: Path, what: str = "JSONL file") -> list[dict[str, Any]]:
    """JSON objects, one per non-blank line; a bad line is named by file and line number."""
    rows = []
    for number, row in iter_json_lines(path, what):
        if not isinstance(row, dict):
            raise UserError(f"{path}:{number}: expected a JSON object, got {type(row).__name__}")
        rows.append(row)
    return rows
