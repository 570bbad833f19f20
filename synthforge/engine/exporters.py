"""Write a run's datasets in TRL's conversational formats, atomically (temp file + rename)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from synthforge.files import write_atomic, write_jsonl
from synthforge.records import Drop, Record, same_text

__all__ = ["export_run", "write_atomic", "write_jsonl"]


def sft_row(record: Record) -> dict[str, Any]:
    """TRL conversational language-modeling row: ``messages`` = user prompt, assistant response."""
    return {
        "id": record.id,
        "messages": [
            {"role": "user", "content": record.prompt},
            {"role": "assistant", "content": record.response},
        ],
    }


def has_preference(record: Record) -> bool:
    """A usable pair: a rejected answer that differs from the chosen one beyond whitespace."""
    if record.rejected is None or record.response is None:
        return False
    return not same_text(record.rejected, record.response)


def dpo_row(record: Record) -> dict[str, Any]:
    """TRL conversational preference row with an explicit prompt (+ the judge's confidence when labelled by one)."""
    row = {
        "id": record.id,
        "prompt": [{"role": "user", "content": record.prompt}],
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


def export_run(out_dir: Path, records: list[Record], drops: list[Drop], sft: bool, dpo: bool) -> dict[str, int]:
    """Write sft/dpo/trace/dropped files; returns their row counts."""
    answered = [r for r in records if r.response]
    counts = {"trace": write_jsonl(out_dir / "trace.jsonl", (r.to_dict() for r in records))}
    counts["dropped"] = write_jsonl(out_dir / "dropped.jsonl", (d.to_dict() for d in drops))
    if sft:
        counts["sft"] = write_jsonl(out_dir / "sft.jsonl", (sft_row(r) for r in answered))
    if dpo:
        counts["dpo"] = write_jsonl(out_dir / "dpo.jsonl", (dpo_row(r) for r in answered if has_preference(r)))
        counts["dpo_skipped_identical"] = sum(1 for r in answered if r.rejected is not None and not has_preference(r))
    return counts
