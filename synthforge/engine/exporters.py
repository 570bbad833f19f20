"""Write a run's datasets in TRL's conversational formats, atomically (temp file + rename)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from synthforge.files import write_atomic, write_jsonl
from synthforge.records import Drop, Record, same_text

__all__ = ["export_run", "write_atomic", "write_jsonl"]


def _context(record: Record, system: bool) -> list[dict[str, str]]:
    """The turns before the final answer: the whole conversation up to its last user turn, the system message
    first unless ``system`` is false."""
    dialogue = record.dialogue
    return dialogue if system or record.system is None else dialogue[1:]


def sft_row(record: Record, system: bool = True) -> dict[str, Any]:
    """TRL conversational language-modeling row: ``messages`` = every turn, the final answer last."""
    return {"id": record.id, "messages": [*_context(record, system), {"role": "assistant", "content": record.response}]}


def has_preference(record: Record) -> bool:
    """A usable pair: a rejected answer that differs from the chosen one beyond whitespace."""
    if record.rejected is None or record.response is None:
        return False
    return not same_text(record.rejected, record.response)


def dpo_row(record: Record, system: bool = True) -> dict[str, Any]:
    """TRL conversational preference row with an explicit prompt (every turn before the final answer) and the
    two final answers (+ the judge's confidence when labelled by one, the reward gap when ranked by a model)."""
    row = {
        "id": record.id,
        "prompt": _context(record, system),
        "chosen": [{"role": "assistant", "content": record.response}],
        "rejected": [{"role": "assistant", "content": record.rejected}],
    }
    preference = record.meta.get("preference")
    if preference:
        row["confidence"] = round(float(preference["confidence"]), 6)
    reward = record.meta.get("reward")
    if reward:  # reward-ranked pairs: the reward model's score gap (TRL's RewardTrainer reads a margin column)
        row["margin"] = round(float(reward["margin"]), 6)
    return row


def export_run(
    out_dir: Path, records: list[Record], drops: list[Drop], sft: bool, dpo: bool, system: bool = True
) -> dict[str, Any]:
    """Write sft/dpo/trace/dropped files; returns their row counts (and, for conversations of several turns,
    how many kept records have each number of user turns)."""
    answered = [r for r in records if r.response]
    counts: dict[str, Any] = {"trace": write_jsonl(out_dir / "trace.jsonl", (r.to_dict() for r in records))}
    counts["dropped"] = write_jsonl(out_dir / "dropped.jsonl", (d.to_dict() for d in drops))
    if sft:
        counts["sft"] = write_jsonl(out_dir / "sft.jsonl", (sft_row(r, system) for r in answered))
    if dpo:
        pairs = (dpo_row(r, system) for r in answered if has_preference(r))
        counts["dpo"] = write_jsonl(out_dir / "dpo.jsonl", pairs)
        counts["dpo_skipped_identical"] = sum(1 for r in answered if r.rejected is not None and not has_preference(r))
    turns = Counter(r.turns for r in records)
    if set(turns) - {1}:
        counts["turns"] = {str(k): v for k, v in sorted(turns.items())}
    return counts
