"""Seed (or held-out evaluation) conversations as records with stable ids; the rows are read by ``synthforge.rows``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from synthforge.annotations import HARMFUL, PERSONA, SOURCE
from synthforge.hashing import canonical_json
from synthforge.records import Record, make_record_id
from synthforge.rows import read_dialogues


def seed_records(
    path: Path,
    field: str = "prompt",
    limit: int | None = None,
    harmful_field: str | None = "harmful",
    system: str | None = None,
    columns: tuple[str, ...] = (),
) -> list[Record]:
    """Records for the first ``limit`` conversations; ids hash the file name, the conversation (a single prompt:
    its text) and its occurrence. ``system``: the system message of rows that have none; ``columns``: seed
    columns kept as the records' fields."""
    rows = read_dialogues(path, field, harmful_field, system, columns)
    if limit is not None:
        rows = rows[:limit]
    seen: dict[str, int] = {}
    records = []
    for row in rows:
        key = canonical_json([row.history, row.prompt])
        occurrence = seen.get(key, 0)
        seen[key] = occurrence + 1
        meta: dict[str, Any] = {}
        SOURCE.set_on(meta, path.name)
        if row.harmful is not None:
            HARMFUL.set_on(meta, row.harmful)
        if row.persona is not None:
            PERSONA.set_on(meta, row.persona)
        record_id = make_record_id(path.name, row.prompt, occurrence, row.history)
        records.append(Record(id=record_id, prompt=row.prompt, meta=meta, history=row.history, fields=row.columns))
    return records
