"""Dedup any JSONL file of chat or instruction data (or a run directory's file), keeping rows unchanged.

Rows are read in the layouts users have: TRL conversational (``messages``; ``prompt`` / ``chosen``
lists), TRL standard (``prompt``, ``completion``, ``chosen``), Alpaca / Self-Instruct (``instruction``,
``input``, ``output``), or plain ``text``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from synthforge.dedup.near_duplicates import DedupSettings, choose_kept
from synthforge.errors import UserError
from synthforge.files import write_jsonl
from synthforge.jsonl import read_jsonl


@dataclass
class DedupReport:
    """What a file dedup did."""

    rows: int
    kept: int
    dropped: int
    clusters: int
    out: Path
    dropped_path: Path


def resolve_input(path: Path, name: str = "sft.jsonl") -> Path:
    """A JSONL file as given, or file ``name`` inside a run directory."""
    if path.is_dir():
        path = path / name
    if not path.is_file():
        raise UserError(f"{path}: no such file (give a JSONL file or a run directory holding {name})")
    return path


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
        return _content(row["messages"], "user"), _content(row["messages"][-1:], "assistant")
    if "instruction" in row:
        prompt = "\n".join(p for p in (row["instruction"], row.get("input")) if isinstance(p, str) and p)
        return prompt, row.get("output") if isinstance(row.get("output"), str) else None
    if "prompt" in row:
        answer = row.get("chosen", row.get("completion", row.get("response")))
        return _content(row["prompt"], "user"), _content(answer, "assistant")
    if "text" in row:
        return row["text"] if isinstance(row["text"], str) else None, None
    return None, None


def key_texts(rows: list[dict[str, Any]], key: str, path: Path) -> list[str]:
    """The compared text of every row; names the first row whose layout lacks ``key``."""
    texts = []
    for number, row in enumerate(rows, 1):
        prompt, response = row_texts(row)
        parts = {"prompt": [prompt], "response": [response], "both": [prompt, response]}[key]
        if any(p is None for p in parts):
            raise UserError(
                f"{path}: row {number} has no {key} (expected messages, prompt/chosen/completion, "
                f"instruction/output or text; keys found: {', '.join(sorted(row)) or 'none'})"
            )
        texts.append("\n".join(p for p in parts if p))
    return texts


def _confidence(row: dict[str, Any], number: int, path: Path) -> float:
    value = row.get("confidence")
    if value is None:
        return 0.0
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise UserError(f"{path}: row {number}: confidence must be a finite number, got {value!r}")
    return float(value)


def dropped_path_for(out: Path) -> Path:
    """Where ``synthforge dedup --out OUT`` writes the rows it dropped."""
    return out.with_name(out.name.removesuffix(".jsonl") + ".dropped.jsonl")


def dedup_file(
    path: Path,
    out: Path,
    settings: DedupSettings,
    key: str = "prompt",
    keep: str = "first",
    progress=None,
    workers: int = 0,
) -> DedupReport:
    """Write ``out`` with one row per near-duplicate cluster and ``<out>.dropped.jsonl`` with the rest."""
    rows = read_jsonl(path)
    if not rows:
        raise UserError(f"{path}: no rows to deduplicate (the file is empty)")
    texts = key_texts(rows, key, path)
    confidences = [_confidence(row, number, path) for number, row in enumerate(rows, 1)]
    best, clusters = choose_kept(texts, confidences, settings, keep, progress, workers)
    sizes = clusters.sizes()
    kept = [row for i, row in enumerate(rows) if best[i] == i]
    dropped = [
        {"reason": "near-duplicate", "duplicate_of_row": int(best[i]) + 1, "cluster_size": int(sizes[i]), "row": row}
        for i, row in enumerate(rows)
        if best[i] != i
    ]
    dropped_path = dropped_path_for(out)
    write_jsonl(out, kept)
    write_jsonl(dropped_path, dropped)
    return DedupReport(len(rows), len(kept), len(dropped), len(np.unique(clusters.labels)), out, dropped_path)
