"""Read seed prompts into records with stable ids."""

from __future__ import annotations

from pathlib import Path

from synthforge.errors import UserError
from synthforge.files import read_text
from synthforge.jsonl import iter_json_lines
from synthforge.records import Record, make_record_id


def read_seed_prompts(path: Path, field: str = "prompt") -> list[str]:
    """Prompts from a JSONL file (``field`` of each object) or a text file (one per non-empty line)."""
    prompts: list[str] = []
    if path.suffix in (".jsonl", ".json"):
        for lineno, obj in iter_json_lines(path, "seeds file"):
            value = obj.get(field) if isinstance(obj, dict) else None
            if not isinstance(value, str) or not value.strip():
                raise UserError(f"{path}:{lineno}: expected an object with a non-empty string {field!r}")
            prompts.append(value.strip())
    else:
        lines = read_text(path, "seeds file").splitlines()
        prompts = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not prompts:
        raise UserError(f"{path}: seeds file has no prompts")
    return prompts


def seed_records(path: Path, field: str = "prompt", limit: int | None = None) -> list[Record]:
    """Records for the first ``limit`` seed prompts; ids hash the file name, the prompt and its occurrence."""
    prompts = read_seed_prompts(path, field)
    if limit is not None:
        prompts = prompts[:limit]
    seen: dict[str, int] = {}
    records = []
    for prompt in prompts:
        occurrence = seen.get(prompt, 0)
        seen[prompt] = occurrence + 1
        records.append(
            Record(id=make_record_id(path.name, prompt, occurrence), prompt=prompt, meta={"source": path.name})
        )
    return records
