"""Read seed (or held-out evaluation) prompts into records with stable ids.

Layouts: JSONL with a prompt field holding text or TRL messages (the first user turn is the prompt), or an
HH-RLHF transcript (``"\\n\\nHuman: … \\n\\nAssistant: …"``, first human turn; HH-RLHF rows carry it in
``chosen``); parquet with the same columns; or plain text, one prompt per line. A boolean ``harmful``
column (or another named one) marks harmful prompts in ``meta.harmful``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from synthforge.errors import UserError
from synthforge.files import read_text
from synthforge.jsonl import iter_json_lines
from synthforge.records import Record, first_user_message, make_record_id

_HUMAN = re.compile(r"^\s*Human:\s*(.*?)(?:\n\s*\n\s*Assistant:|\Z)", re.DOTALL)


def prompt_text(value: Any) -> str | None:
    """The prompt in a cell: text, the first user message of a message list, or an HH-RLHF transcript's first
    human turn; None when there is none."""
    if isinstance(value, list):
        value = first_user_message(value)
    if not isinstance(value, str) or not value.strip():
        return None
    match = _HUMAN.match(value)
    return (match.group(1) if match else value).strip() or None


def _rows(path: Path) -> list[tuple[int, Any]]:
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path)
        except Exception as exc:  # noqa: BLE001 - any unreadable parquet is the user's file: name it
            raise UserError(f"{path}: cannot read parquet: {exc}") from None
        return list(enumerate(table.to_pylist(), start=1))
    return list(iter_json_lines(path, "prompts file"))


def read_prompt_rows(
    path: Path, field: str = "prompt", harmful_field: str | None = "harmful"
) -> list[tuple[str, bool | None]]:
    """(prompt, harmful or None) of every row of a prompts file (see the module's layouts)."""
    found: list[tuple[str, bool | None]] = []
    if path.suffix in (".jsonl", ".json", ".parquet"):
        for number, row in _rows(path):
            if not isinstance(row, dict):
                raise UserError(f"{path}:{number}: expected an object with a {field!r} field")
            value = prompt_text(row.get(field, row.get("chosen") if field == "prompt" else None))
            if value is None:
                raise UserError(f"{path}:{number}: expected a non-empty {field!r} (text, messages or a transcript)")
            flag = row.get(harmful_field) if harmful_field else None
            if flag is not None and not isinstance(flag, bool):
                raise UserError(f"{path}:{number}: {harmful_field!r} must be true or false, got {flag!r}")
            found.append((value, flag))
    else:
        lines = read_text(path, "seeds file").splitlines()
        found = [(line.strip(), None) for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not found:
        raise UserError(f"{path}: seeds file has no prompts")
    return found


def read_seed_prompts(path: Path, field: str = "prompt") -> list[str]:
    """Prompts from a JSONL or parquet file (``field`` of each row) or a text file (one per non-empty line)."""
    return [prompt for prompt, _ in read_prompt_rows(path, field, None)]


def seed_records(
    path: Path, field: str = "prompt", limit: int | None = None, harmful_field: str | None = "harmful"
) -> list[Record]:
    """Records for the first ``limit`` prompts; ids hash the file name, the prompt and its occurrence."""
    rows = read_prompt_rows(path, field, harmful_field)
    if limit is not None:
        rows = rows[:limit]
    seen: dict[str, int] = {}
    records = []
    for prompt, harmful in rows:
        occurrence = seen.get(prompt, 0)
        seen[prompt] = occurrence + 1
        meta: dict[str, Any] = {"source": path.name}
        if harmful is not None:
            meta["harmful"] = harmful
        records.append(Record(id=make_record_id(path.name, prompt, occurrence), prompt=prompt, meta=meta))
    return records
