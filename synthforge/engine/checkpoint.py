"""Append-only, per-stage checkpoints: one JSON line per finished input record.

A batch is written with one ``write`` and flushed (and fsynced) before the next one starts, so a
``kill -9`` loses at most the batch in flight; a torn last line is ignored on reload.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from synthforge.records import Drop, Record

Result = Record | Drop


class StageCheckpoint:
    """Results of one stage fingerprint, keyed by the input record's content hash."""

    def __init__(self, path: Path):
        self.path = path
        self.results: dict[str, Result] = {entry["key"]: _decode(entry) for entry in read_appended(path)}

    def get(self, key: str) -> Result | None:
        return self.results.get(key)

    def append(self, entries: list[tuple[str, Result]]) -> None:
        """Persist a finished batch durably, then remember it."""
        blob = "".join(json.dumps(_encode(k, r), ensure_ascii=False) + "\n" for k, r in entries)
        append_durably(self.path, blob)
        self.results.update(entries)


class Journal:
    """Intermediate work of a whole-dataset stage (e.g. one Self-Instruct round), so a killed run resumes
    inside the stage: append-only JSON lines ``{"key", "value"}``, each fsynced; a torn tail is cut."""

    def __init__(self, path: Path):
        self.path = path
        self.entries: dict[str, Any] = {entry["key"]: entry["value"] for entry in read_appended(path)}

    def get(self, key: str) -> Any:
        return self.entries.get(key)

    def put(self, key: str, value: Any) -> None:
        """Persist ``value`` under ``key`` durably before returning."""
        append_durably(self.path, json.dumps({"key": key, "value": value}, ensure_ascii=False) + "\n")
        self.entries[key] = value

    def discard(self) -> None:
        """Remove the journal once the stage's whole result is saved."""
        self.path.unlink(missing_ok=True)


def append_durably(path: Path, text: str) -> None:
    """Append ``text`` durably (flushed and fsynced); a file system refusing it (full, read-only) is one line, and
    what it wrote of it is cut off again (a kill in the middle leaves a torn last line, ignored on reload)."""
    from synthforge.files import make_dirs, writing

    make_dirs(path.parent)
    data = text.encode("utf-8")
    with writing(path):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            start = os.fstat(fd).st_size
            try:
                view = memoryview(data)
                while view:  # unbuffered: nothing is left to be written later, on close
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            except OSError:
                os.ftruncate(fd, start)  # no torn line for the next append to run into
                raise
        finally:
            os.close(fd)


def save_results(path: Path, results: list[Result]) -> None:
    """Write a whole-dataset stage's results at once (atomically: the file exists only when complete)."""
    from synthforge.files import write_atomic

    write_atomic(
        path, "".join(json.dumps(_encode(str(i), r), ensure_ascii=False) + "\n" for i, r in enumerate(results))
    )


def load_results(path: Path) -> list[Result] | None:
    """The results saved by :func:`save_results`, in order, or None when there are none."""
    if not path.is_file():
        return None
    with open(path, encoding="utf-8") as handle:
        return [_decode(json.loads(line)) for line in handle]


def read_appended(path: Path) -> list[dict[str, Any]]:
    """The complete JSON lines of an append-only file; a torn tail from a killed run (a line without its
    newline, or one that does not parse) is cut, so later appends start on a clean line and it is redone."""
    if not path.is_file():
        return []
    entries, valid = [], 0
    with open(path, "rb") as handle:
        for line in handle:
            if not line.endswith(b"\n"):
                break
            try:
                entries.append(json.loads(line))
            except json.JSONDecodeError:
                break
            valid += len(line)
    if valid != path.stat().st_size:
        os.truncate(path, valid)
    return entries


def _encode(key: str, result: Result) -> dict[str, Any]:
    if isinstance(result, Drop):
        return {"key": key, "drop": result.to_dict()}
    return {"key": key, "record": result.to_dict()}


def _decode(entry: dict[str, Any]) -> Result:
    if "drop" in entry:
        return Drop.from_dict(entry["drop"])
    return Record.from_dict(entry["record"])
