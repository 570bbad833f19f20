"""Seed (or held-out evaluation) prompts as records with stable ids; the rows are read by ``synthforge.rows``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from synthforge.records import Record, make_record_id
from synthforge.rows import read_prompts


def seed_records(
    path: Path, field: str = "prompt", limit: int | None = None, harmful_field: str | None = "harmful"
) -> list[Record]:
    """Records for the first ``limit`` prompts; ids hash the file name, the prompt and its occurrence."""
    rows = read_prompts(path, field, harmful_field)
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
