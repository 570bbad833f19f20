"""Training data: a run directory, a JSONL or parquet file, or a saved ``datasets`` directory, in any layout
``synthforge.rows`` reads (TRL's formats as they are; ShareGPT, HH-RLHF and Alpaca rows are converted).

SFT rows with a conversation become conversational prompt-completion rows (every turn before the last
assistant message is the prompt), so TRL computes the loss on the assistant's answer only.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from synthforge.errors import UserError
from synthforge.hashing import file_sha256
from synthforge.provenance import unfinished_export
from synthforge.rows import check_dialogue, dialogue, is_saved_dataset, read_rows

SFT_LAYOUTS = "'messages' (chat), 'prompt' + 'completion', or 'text'"
DPO_COLUMNS = ("prompt", "chosen", "rejected")


def resolve_data_path(source: str | Path, kind: str) -> Path:
    """The file or saved-dataset directory to read for ``kind`` ("sft" or "dpo")."""
    path = Path(source).expanduser()
    if path.is_dir() and unfinished_export(path):
        raise UserError(f"{path}: this run's export did not finish (no manifest.json): rerun synthforge generate")
    if path.is_dir() and not is_saved_dataset(path):
        path = path / f"{kind}.jsonl"
    if not path.exists():
        raise UserError(f"training data {path} not found (give a run directory, a JSONL file or a saved dataset)")
    return path


def load_rows(source: str | Path, kind: str, optional: tuple[str, ...] = (), assistant_turns: str = "final"):
    """A ``datasets.Dataset`` of ``kind`` rows from ``source``, checked and converted for TRL; ``optional``
    columns (e.g. the judge's ``confidence``) are kept when every row has them. SFT conversations train on their
    final assistant turn (``assistant_turns: final``: earlier turns may be another model's or a person's) or on
    every assistant turn (``all``: one row per assistant turn, its context the prompt)."""
    import datasets

    path = resolve_data_path(source, kind)
    rows = [_native(row, kind) for _, row in read_rows(path)]
    if not rows:
        raise UserError(f"{path}: no rows to train on")
    prepared = _prepare(rows, kind, path, assistant_turns)
    for column in optional:
        if all(row.get(column) is not None for row in rows):
            for out, row in zip(prepared, rows, strict=True):
                out[column] = _number(row[column], column, path)
    try:
        return datasets.Dataset.from_list(prepared)
    except (TypeError, ValueError) as exc:  # pyarrow.ArrowInvalid: mixed types in one column
        detail = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise UserError(f"{path}: rows don't share one layout: {detail}") from None


def _native(row: dict[str, Any], kind: str) -> dict[str, Any]:
    """A row in TRL's own layouts as it is; a ShareGPT, HH-RLHF or Alpaca row as TRL's conversational one."""
    if any(k in row for k in ("messages", "prompt", "text")) or not (found := dialogue(row)):
        return row
    if kind == "dpo":
        return {**row, "prompt": found.prompt, "chosen": found.chosen, "rejected": found.rejected}
    return {**row, "messages": [*found.prompt, *(found.chosen or [])]}


def _prepare(rows: list[dict[str, Any]], kind: str, path: Path, assistant_turns: str) -> list[dict[str, Any]]:
    """Rows reduced to the columns TRL reads; SFT chat rows split into prompt and completion; conversations
    checked (roles, alternation, no empty turn)."""
    columns = set(rows[0])
    if kind == "dpo":
        missing = [c for c in DPO_COLUMNS if c not in columns]
        if missing:
            raise UserError(f"{path}: DPO data needs columns {', '.join(DPO_COLUMNS)}; missing {', '.join(missing)}")
        _require_columns(rows, DPO_COLUMNS, path)
        for number, row in enumerate(rows, 1):
            if isinstance(row["prompt"], list):
                check_dialogue(row["prompt"], f"{path}: row {number}: prompt")
        return [{c: row.get(c) for c in DPO_COLUMNS} for row in rows]
    if "messages" in columns:
        _require_columns(rows, ("messages",), path)
        bad = next((i for i, row in enumerate(rows) if not _ends_with_answer(row.get("messages"))), None)
        if bad is not None:
            raise UserError(f"{path}: row {bad + 1}: 'messages' must be a list ending with an assistant message")
        prepared = []
        for number, row in enumerate(rows, 1):
            messages = check_dialogue(row["messages"], f"{path}: row {number}", answer=True, reasoning=True)
            ends = [k for k, m in enumerate(messages) if m["role"] == "assistant"]
            for end in ends if assistant_turns == "all" else ends[-1:]:
                prepared.append({"prompt": messages[:end], "completion": messages[end : end + 1]})
        return prepared
    for layout in (("prompt", "completion"), ("text",)):
        if set(layout) <= columns:
            _require_columns(rows, layout, path)
            return [{c: row.get(c) for c in layout} for row in rows]
    raise UserError(f"{path}: SFT data needs {SFT_LAYOUTS}; found columns {', '.join(sorted(columns))}")


def _number(value: Any, column: str, path: Path) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise UserError(f"{path}: column {column!r} must hold finite numbers, got {value!r}")
    return float(value)


def _require_columns(rows: list[dict[str, Any]], columns: tuple[str, ...], path: Path) -> None:
    """Every row has every column (not only the first row, which chose the layout)."""
    for number, row in enumerate(rows, 1):
        missing = [c for c in columns if row.get(c) is None]
        if missing:
            raise UserError(f"{path}: row {number}: missing {', '.join(missing)} (the first row has it)")


def _ends_with_answer(messages: Any) -> bool:
    return (
        isinstance(messages, list)
        and bool(messages)
        and isinstance(messages[-1], dict)
        and messages[-1].get("role") == "assistant"
    )


def data_provenance(source: str | Path, kind: str) -> dict[str, Any]:
    """Where the training data came from: its file and sha256, and, for a synthforge run directory, the
    run's pipeline, teacher and seed (from its manifest.json)."""
    path = resolve_data_path(source, kind)
    found: dict[str, Any] = {"path": str(path), "sha256": file_sha256(path) if path.is_file() else None}
    manifest = path.parent / "manifest.json"
    if path.is_file() and manifest.is_file():
        run = json.loads(manifest.read_text(encoding="utf-8"))
        found["run"] = {
            "pipeline": run.get("pipeline", {}).get("name"),
            "pipeline_sha256": run.get("pipeline", {}).get("sha256"),
            "teacher": (run.get("teacher") or {}).get("name"),
            "seed": run.get("seed"),
            "synthforge_version": run.get("synthforge_version"),
        }
    return found


def split(dataset, eval_fraction: float, seed: int):
    """(train, eval) with a seeded shuffle; eval is None when ``eval_fraction`` is 0 or rows are too few."""
    if eval_fraction <= 0 or dataset.num_rows < 2:
        return dataset, None
    size = max(1, round(dataset.num_rows * eval_fraction))
    parts = dataset.train_test_split(test_size=size, seed=seed)
    return parts["train"], parts["test"]


def row_count(rows) -> int:
    """Rows in a split part (0 for the eval part :func:`split` leaves out)."""
    return rows.num_rows if rows is not None else 0


SYSTEM_PROBE = "synthforge-system-probe"


MESSAGE_COLUMNS = ("messages", "prompt", "completion", "chosen", "rejected")


def fit_reasoning(tokenizer: Any, rows: Any) -> Any:
    """Rows whose answers carry their thinking (``reasoning_content``), in the form the student's chat template
    expects: as they are when the template reads ``reasoning_content``, else inlined as ``<think>…</think>``
    before the answer (what such templates render). Rows without thinking are returned unchanged."""
    if rows is None:
        return rows
    columns = [c for c in MESSAGE_COLUMNS if c in rows.column_names]
    if not any(_has_thinking(value) for c in columns for value in rows[c]):
        return rows
    if "reasoning_content" in (getattr(tokenizer, "chat_template", None) or ""):
        return rows

    def inline(row: dict[str, Any]) -> dict[str, Any]:
        return {c: [_inlined(m) for m in row[c]] if isinstance(row[c], list) else row[c] for c in columns}

    return rows.map(inline, desc="thinking inlined as <think> tags")


def _has_thinking(value: Any) -> bool:
    return isinstance(value, list) and any(isinstance(m, dict) and m.get("reasoning_content") for m in value)


def _inlined(message: dict[str, Any]) -> dict[str, Any]:
    thought = message.get("reasoning_content")
    if not thought:
        return message
    return {**message, "content": f"<think>\n{thought}\n</think>\n\n{message['content']}", "reasoning_content": None}


def check_roles(tokenizer: Any, rows: Any, ref: str) -> None:
    """The student's chat template must render every role the data holds: a system message it refuses or drops
    silently is one line, before any training."""
    columns = [c for c in ("messages", "prompt") if c in rows.column_names]
    if not any(
        isinstance(value, list) and value and isinstance(value[0], dict) and value[0].get("role") == "system"
        for column in columns
        for value in rows[column]
    ):
        return
    probe = [{"role": "system", "content": SYSTEM_PROBE}, {"role": "user", "content": "hi"}]
    try:
        text = tokenizer.apply_chat_template(probe, tokenize=False, add_generation_prompt=True)
    except Exception as exc:  # noqa: BLE001 - any template error: its own message says why
        raise UserError(f"model {ref!r}: its chat template can't render a system message ({exc})") from None
    if SYSTEM_PROBE not in text:
        raise UserError(
            f"model {ref!r}: the data has system messages, but its chat template drops them silently; train a "
            "model whose template has a system role, or export without them (export.system: false)"
        )
