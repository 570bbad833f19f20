"""Write a run's datasets in TRL's conversational formats, atomically (temp file + rename)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from synthforge.annotations import PREFERENCE, RATING, REWARD
from synthforge.files import write_atomic, write_jsonl
from synthforge.records import Drop, Record, same_text

__all__ = ["export_run", "write_atomic", "write_jsonl"]


def _context(record: Record, system: bool) -> list[dict[str, str]]:
    """The turns before the final answer: the whole conversation up to its last user turn, the system message
    first unless ``system`` is false."""
    dialogue = record.dialogue
    return dialogue if system or record.system is None else dialogue[1:]


def _turn(record: Record, answer: str | None, reasoning: bool) -> dict[str, Any]:
    """An assistant turn; with ``reasoning``, the thinking behind it as TRL's ``reasoning_content`` (when known)."""
    turn: dict[str, Any] = {"role": "assistant", "content": answer}
    thought = record.thinking(answer) if reasoning else None
    if thought is not None:
        turn["reasoning_content"] = thought
    return turn


def _with_thinking(record: Record, turns: list[dict[str, Any]], reasoning: bool) -> list[dict[str, Any]]:
    """Earlier assistant turns with their thinking (``reasoning``: keep), the others as they are."""
    if not reasoning or not record.reasoning:
        return turns
    return [_turn(record, t["content"], True) if t["role"] == "assistant" else t for t in turns]


def sft_row(record: Record, system: bool = True, reasoning: bool = False) -> dict[str, Any]:
    """TRL conversational language-modeling row: ``messages`` = every turn, the final answer last (``reasoning``:
    each answer's thinking as ``reasoning_content``, where a reasoning teacher wrote one)."""
    context = _with_thinking(record, _context(record, system), reasoning)
    return {"id": record.id, "messages": [*context, _turn(record, record.response, reasoning)]}


def has_preference(record: Record) -> bool:
    """A usable pair: a rejected answer that differs from the chosen one beyond whitespace, and not a tie (a
    judge whose two orders disagreed, or who was undecided, labelled nothing)."""
    if record.rejected is None or record.response is None or _tie(record):
        return False
    return not same_text(record.rejected, record.response)


def _tie(record: Record) -> bool:
    preference = PREFERENCE.of(record)
    return preference is not None and preference.tie


def dpo_row(record: Record, system: bool = True, reasoning: bool = False) -> dict[str, Any]:
    """TRL conversational preference row with an explicit prompt (every turn before the final answer) and the
    two final answers (+ the judge's confidence when labelled by one, the reward gap when ranked by a model, both
    mean scores when paired by a rubric judge)."""
    row = {
        "id": record.id,
        "prompt": _with_thinking(record, _context(record, system), reasoning),
        "chosen": [_turn(record, record.response, reasoning)],
        "rejected": [_turn(record, record.rejected, reasoning)],
    }
    preference = PREFERENCE.of(record)
    if preference is not None:
        row["confidence"] = round(preference.confidence, 6)
    reward = REWARD.of(record)
    if reward is not None:  # reward-ranked pairs: the reward model's score gap (TRL's RewardTrainer reads a margin)
        row["margin"] = round(reward.margin, 6)
    rating = RATING.of(record)
    if rating is not None:  # pairs from rubric scores: both mean scores (as UltraFeedback binarized) and who wrote each
        row["score_chosen"] = round(rating.chosen_score, 6)
        row["score_rejected"] = round(rating.rejected_score, 6)
        row |= {
            k: getattr(rating, k) for k in ("chosen_teacher", "rejected_teacher", "chosen_member", "rejected_member")
        }
    return row


CONVERSATION_COLUMNS = ("prompt", "response", "rejected", "system", "conversation", "history", "turns", "reasoning")


def column(record: Record, name: str) -> Any:
    """A table column of a record: a part of its conversation, or one of its fields (the record's own columns
    first: a field can never stand in for them)."""
    if name not in CONVERSATION_COLUMNS:
        return record.fields.get(name)  # None: a field a dropped path never wrote (validation checks kept ones)
    if name == "reasoning":  # the thinking behind the final answer
        return record.thinking(record.response)
    if name == "conversation":
        final = [{"role": "assistant", "content": record.response}] if record.response else []
        return [*record.dialogue, *final]
    return getattr(record, name)


def table_rows(records: list[Record], fields: list[str]) -> list[dict[str, Any]]:
    """One row per record: its id, then ``fields`` in order."""
    return [{"id": r.id, **{f: column(r, f) for f in fields}} for r in records]


def write_table(path: Path, rows: list[dict[str, Any]]) -> int:
    """``rows`` as JSON lines or Parquet (by ``path``'s suffix), written whole or not at all."""
    if path.suffix == ".jsonl":
        return write_jsonl(path, rows)
    import os
    import tempfile

    import pyarrow as pa
    import pyarrow.parquet as pq

    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.synthforge-tmp-{os.getpid()}-", dir=path.parent)
    os.close(handle)
    try:
        pq.write_table(pa.Table.from_pylist(rows), temporary)
        os.replace(temporary, path)
    finally:
        Path(temporary).unlink(missing_ok=True)
    return len(rows)


def export_run(
    out_dir: Path,
    records: list[Record],
    drops: list[Drop],
    sft: bool,
    dpo: bool,
    system: bool = True,
    table: tuple[str, list[str]] | None = None,
    reasoning: bool = False,
) -> dict[str, Any]:
    """Write sft/dpo/trace/dropped files (and ``table``: its file name and columns; ``reasoning``: answers keep
    their thinking); returns their row counts (and, for conversations of several turns, how many kept records
    have each number of user turns; and how many answers came with thinking)."""
    answered = [r for r in records if r.response]
    counts: dict[str, Any] = {"trace": write_jsonl(out_dir / "trace.jsonl", (r.to_dict() for r in records))}
    if table is not None:
        counts["table"] = write_table(out_dir / table[0], table_rows(records, table[1]))
    counts["dropped"] = write_jsonl(out_dir / "dropped.jsonl", (d.to_dict() for d in drops))
    if sft:
        counts["sft"] = write_jsonl(out_dir / "sft.jsonl", (sft_row(r, system, reasoning) for r in answered))
    if dpo:
        pairs = (dpo_row(r, system, reasoning) for r in answered if has_preference(r))
        counts["dpo"] = write_jsonl(out_dir / "dpo.jsonl", pairs)
        ties = sum(1 for r in answered if r.rejected is not None and _tie(r))
        counts["dpo_skipped_identical"] = sum(1 for r in answered if r.rejected is not None and not has_preference(r))
        counts["dpo_skipped_identical"] -= ties
        if ties:
            counts["dpo_skipped_undecided"] = ties  # the judge labelled nothing (its orders disagreed)
    thought = sum(1 for r in answered if r.thinking(r.response) is not None)
    if thought:
        counts["with_reasoning"] = thought
    turns = Counter(r.turns for r in records)
    if set(turns) - {1}:
        counts["turns"] = {str(k): v for k, v in sorted(turns.items())}
    return counts
