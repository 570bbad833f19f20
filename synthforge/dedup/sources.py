"""What ``synthforge dedup`` compares per row, and the row's keep score; rows are read by ``synthforge.rows``
(every layout it knows: TRL, ShareGPT, HH-RLHF, Alpaca, text; JSONL and parquet, streamed)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

from synthforge.dedup.keys import compared_text, missing_part
from synthforge.errors import UserError
from synthforge.rows import Place, dialogue, iter_rows, where


def keyed_rows(source: Any, path: str, key: str, keep: str) -> Iterator[tuple[str, float]]:
    """(compared text, keep score) of each row of one input file, streamed: the score is the text's length
    for keep "longest", the row's confidence for "confidence", else 0."""
    for row_index, (number, row, _) in enumerate(iter_rows(source, path)):
        at = (path, number, row_index + 1)
        text = key_text(row, key, at)
        yield text, float(len(text)) if keep == "longest" else confidence(row, at) if keep == "confidence" else 0.0


def key_text(row: dict[str, Any], key: str, at: Place) -> str:
    """The compared text of a row in any supported layout (``key``: :data:`synthforge.dedup.keys.KEYS`)."""
    found = dialogue(row)
    turns, answer = (found.prompt, found.answer()) if found else ([], None)
    missing = missing_part(key, turns, answer) if found else key
    if missing:
        raise UserError(
            f"{where(*at)} has no {missing} (expected messages, prompt/chosen/completion, conversations, an HH-RLHF "
            f"transcript, instruction/output or text; keys found: {', '.join(sorted(row)) or 'none'})"
        )
    return compared_text(key, turns, answer)


def confidence(row: dict[str, Any], at: Place) -> float:
    """The row's ``confidence`` (0 when absent) for ``--keep confidence``."""
    value = row.get("confidence")
    if value is None:
        return 0.0
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise UserError(f"{where(*at)}: confidence must be a finite number, got {value!r}")
    return float(value)
