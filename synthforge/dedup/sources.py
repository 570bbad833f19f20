"""What ``synthforge dedup`` reads: JSONL and parquet files, streamed row by row, and the text compared per row.

Rows come in the layouts users have: TRL conversational (``messages``; ``prompt`` / ``chosen`` lists), TRL
standard (``prompt``, ``completion``, ``chosen``), Alpaca / Self-Instruct (``instruction``, ``input``,
``output``), or plain ``text``. Every error names the file and the line (JSONL) or row (parquet).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from synthforge.errors import UserError

DATA_SUFFIXES = (".jsonl", ".parquet")
KEYS = ("prompt", "response", "both")
_READ = 1 << 20


def data_files(source: Path) -> list[Path]:
    """The input files of ``source``: the file itself, or every .jsonl / .parquet file under a directory
    (sorted by relative path; that order is the row order of the whole input)."""
    if source.is_file():
        if source.suffix not in DATA_SUFFIXES:
            raise UserError(f"{source}: expected a .jsonl or .parquet file")
        return [source]
    if not source.is_dir():
        raise UserError(f"{source}: no such file or directory")
    found = sorted(
        (p for p in source.rglob("*") if p.suffix in DATA_SUFFIXES and p.is_file() and not _hidden(p, source)),
        key=lambda p: p.relative_to(source).as_posix(),
    )
    if not found:
        raise UserError(f"{source}: the directory holds no .jsonl or .parquet files")
    return found


def _hidden(path: Path, root: Path) -> bool:
    return any(part.startswith((".", "_")) for part in path.relative_to(root).parts)


def _lines(read: Callable[[int], bytes]) -> Iterator[bytes]:
    """Lines of a byte stream split at b"\\n" only (JSON strings may hold U+2028 and friends raw)."""
    rest = b""
    while chunk := read(_READ):
        parts = (rest + chunk).split(b"\n")
        rest = parts.pop()
        yield from parts
    if rest:
        yield rest


def jsonl_lines(read: Callable[[int], bytes], path: str) -> Iterator[tuple[int, str]]:
    """(line number, text) of every non-blank line of a JSONL byte stream (without its line ending)."""
    for number, raw in enumerate(_lines(read), 1):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise UserError(
                f"{path}:{number}: JSONL file is not UTF-8 text (byte 0x{raw[exc.start]:02x} at column {exc.start})"
            ) from None
        if text.strip():
            yield number, text.removesuffix("\r")


def parse_row(text: str, path: str, number: int) -> dict[str, Any]:
    """The JSON object on line ``number``; anything else names the file and line."""
    try:
        row = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}:{number}: not a JSON line ({exc.msg})") from None
    if not isinstance(row, dict):
        raise UserError(f"{path}:{number}: expected a JSON object, got {type(row).__name__}")
    return row


def iter_jsonl(read: Callable[[int], bytes], path: str) -> Iterator[tuple[int, dict[str, Any], str]]:
    """(line number, row, line) of every non-blank line of a JSONL byte stream; a bad line names file and line."""
    for number, text in jsonl_lines(read, path):
        yield number, parse_row(text, path, number), text


def iter_parquet(source: Any, path: str) -> Iterator[tuple[int, dict[str, Any], None]]:
    """(row number, row, None) of a parquet file (a path or a random-access file), read in record batches."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        batches = pq.ParquetFile(source).iter_batches(batch_size=4096)
    except (pa.ArrowException, OSError) as exc:
        raise UserError(f"{path}: not a readable parquet file ({str(exc).splitlines()[0]})") from None
    number = 0
    for batch in batches:
        for row in batch.to_pylist():
            number += 1
            yield number, row, None


def iter_rows(source: Any, path: str) -> Iterator[tuple[int, dict[str, Any], str | None]]:
    """(line or row number, row, the JSONL line as read or None for parquet) of one input file, streamed;
    ``source`` is the path or an open binary file."""
    try:
        if path.endswith(".parquet"):
            yield from iter_parquet(source, path)
        elif isinstance(source, str | Path):
            with open(source, "rb") as handle:
                yield from iter_jsonl(handle.read, path)
        else:
            yield from iter_jsonl(source.read, path)
    except OSError as exc:
        raise UserError(f"{path}: cannot read: {exc.strerror or exc}") from None


def iter_lines(source: Any, path: str) -> Iterator[str]:
    """The output line of each row of one input file, in order: a JSONL line as read (not parsed again), a
    parquet row as JSON."""
    if path.endswith(".parquet"):
        for number, row, _ in iter_parquet(source, path):
            yield json_line(row, (path, number, number))
    else:
        for _, text in jsonl_lines(source.read, path):
            yield text + "\n"


def keyed_rows(source: Any, path: str, key: str, keep: str) -> Iterator[tuple[str, float]]:
    """(compared text, keep score) of each row of one input file, streamed: the score is the text's length
    for keep "longest", the row's confidence for "confidence", else 0."""
    for row_index, (number, row, _) in enumerate(iter_rows(source, path)):
        at = (path, number, row_index + 1)
        text = key_text(row, key, at)
        yield text, float(len(text)) if keep == "longest" else confidence(row, at) if keep == "confidence" else 0.0


def _content(value: Any, role: str) -> str | None:
    """Text of a plain string, or of the messages with ``role`` in a conversational list."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        texts = [m.get("content", "") for m in value if isinstance(m, dict) and m.get("role") == role]
        return "\n".join(t for t in texts if isinstance(t, str)) if texts else None
    return None


def row_texts(row: dict[str, Any]) -> tuple[str | None, str | None]:
    """(prompt, response) of a row in any supported layout; None where the layout has none."""
    if "messages" in row:
        messages = row["messages"] if isinstance(row["messages"], list) else []
        return _content(messages, "user"), _content(messages[-1:], "assistant")
    if "instruction" in row:
        prompt = "\n".join(p for p in (row["instruction"], row.get("input")) if isinstance(p, str) and p)
        return prompt, row.get("output") if isinstance(row.get("output"), str) else None
    if "prompt" in row:
        answer = row.get("chosen", row.get("completion", row.get("response")))
        return _content(row["prompt"], "user"), _content(answer, "assistant")
    if "text" in row:
        return row["text"] if isinstance(row["text"], str) else None, None
    return None, None


Place = tuple[str, int, int]  # (file, line number, row number): where a row is, named in errors


def key_text(row: dict[str, Any], key: str, at: Place) -> str:
    """The compared text of a row (``key``: prompt, response or both)."""
    prompt, response = row_texts(row)
    parts = {"prompt": [prompt], "response": [response], "both": [prompt, response]}[key]
    if any(p is None for p in parts):
        raise UserError(
            f"{where(*at)} has no {key} (expected messages, prompt/chosen/completion, "
            f"instruction/output or text; keys found: {', '.join(sorted(row)) or 'none'})"
        )
    return "\n".join(p for p in parts if p)


def confidence(row: dict[str, Any], at: Place) -> float:
    """The row's ``confidence`` (0 when absent) for ``--keep confidence``."""
    value = row.get("confidence")
    if value is None:
        return 0.0
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise UserError(f"{where(*at)}: confidence must be a finite number, got {value!r}")
    return float(value)


def json_line(row: dict[str, Any], at: Place) -> str:
    """The row as one JSON line (as ``write_jsonl`` writes it); a value JSON cannot hold names the row."""
    try:
        return json.dumps(row, ensure_ascii=False) + "\n"
    except (TypeError, ValueError) as exc:
        raise UserError(f"{where(*at)}: a value cannot be written as JSON ({exc})") from None


def where(path: str, number: int, row: int) -> str:
    """How errors name a row: ``file:line: row N``."""
    return f"{path}:{number}: row {row}"
