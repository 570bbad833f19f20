"""The record that flows through a pipeline, and the drop that leaves it."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any

from synthforge.hashing import stable_hash

Message = dict[str, str]


# Names a record's own attributes and the template variables of a conversation take: not usable as column names.
RESERVED_FIELDS = frozenset(
    {"id", "prompt", "response", "rejected", "steps", "meta", "history", "fields", "reasoning", "candidates"}
    | {"conversation", "system", "turns"}
)


@dataclass(frozen=True, slots=True)
class Candidate:
    """One of several answers to a record's conversation (a pool's, see ``stages/pool.py``): who wrote it, and
    what raters scored it (``stages/rate.py``). The typed contract between the stages that write and read
    ``Record.candidates``."""

    text: str
    teacher: str = "default"  # the named teacher that wrote it
    member: str = ""  # the pool member (a teacher with its own sampling settings and system prompt)
    scores: dict[str, float] = field(default_factory=dict)  # rubric aspect -> score (1..scale)
    finish_reason: str | None = None

    @property
    def rating(self) -> float | None:
        """The mean of its aspects' scores (None before it was rated)."""
        return sum(self.scores.values()) / len(self.scores) if self.scores else None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"text": self.text, "teacher": self.teacher, "member": self.member}
        if self.scores:
            data["scores"] = self.scores
        if self.finish_reason is not None:
            data["finish_reason"] = self.finish_reason
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Candidate:
        return cls(
            text=data["text"],
            teacher=data.get("teacher", "default"),
            member=data.get("member", ""),
            scores={k: float(v) for k, v in (data.get("scores") or {}).items()},
            finish_reason=data.get("finish_reason"),
        )


@dataclass(slots=True)
class Record:
    """A conversation and what the pipeline made of it.

    ``history`` holds the turns before the last user turn (a system message first, if any), ``prompt`` that last
    user turn; a single prompt is the one-turn case (empty history). ``response`` is the current best answer to
    it — the final assistant turn (the SFT target and the DPO "chosen"); ``rejected`` is the alternative final
    turn it beat, when a stage produced a preference. ``steps`` is the trace: one dict per teacher call or
    decision, in order. ``fields`` are named columns beside the dialogue: seed columns a pipeline keeps, and
    what user-defined ``generate`` stages write (a structured answer's properties among them). ``reasoning``: a
    reasoning teacher's thinking behind the answers the record holds, keyed by :func:`answer_key` of the answer
    (so it follows an answer wherever stages move it: chosen, rejected, an earlier turn); critique, judges,
    filters and dedup never see it, exports include it on request.
    """

    id: str
    prompt: str
    response: str | None = None
    rejected: str | None = None
    steps: list[dict[str, Any]] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    history: list[Message] = field(default_factory=list)
    fields: dict[str, Any] = field(default_factory=dict)  # named columns: seed columns and what `generate` writes
    reasoning: dict[str, str] = field(default_factory=dict)  # answer_key(answer) -> the thinking behind it
    candidates: list[Candidate] = field(default_factory=list)  # several answers to rank (a pool's), in order

    @property
    def dialogue(self) -> list[Message]:
        """The conversation up to and including the last user turn (what the next answer answers)."""
        return [*self.history, {"role": "user", "content": self.prompt}]

    def conversation_text(self) -> str:
        """The whole conversation as text, with the final answer when there is one (filters, dedup keys)."""
        final = [{"role": "assistant", "content": self.response}] if self.response else []
        return render_dialogue([*self.dialogue, *final])

    @property
    def system(self) -> str | None:
        """The system message's text, if the conversation has one."""
        return self.history[0]["content"] if self.history and self.history[0]["role"] == "system" else None

    @property
    def turns(self) -> int:
        """User turns in the conversation (1 for a single prompt)."""
        return 1 + sum(1 for m in self.history if m["role"] == "user")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (the checkpoint and trace format); a one-turn record has no ``history`` key, so it
        serialises as records did before conversations."""
        data: dict[str, Any] = {"id": self.id}
        if self.history:
            data["history"] = self.history
        data.update(
            {
                "prompt": self.prompt,
                "response": self.response,
                "rejected": self.rejected,
                "steps": self.steps,
                "meta": self.meta,
            }
        )
        if self.fields:  # absent when there are none: records without columns serialise as before
            data["fields"] = self.fields
        if self.reasoning:
            data["reasoning"] = self.reasoning
        if self.candidates:  # absent when there are none: records without a pool serialise as before
            data["candidates"] = [c.to_dict() for c in self.candidates]
        return data

    def thinking(self, answer: str | None) -> str | None:
        """The thinking behind ``answer`` (one of this record's answers), if a reasoning teacher wrote it."""
        return self.reasoning.get(answer_key(answer)) if answer and self.reasoning else None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Record:
        """Inverse of :meth:`to_dict`."""
        return cls(
            id=data["id"],
            prompt=data["prompt"],
            response=data.get("response"),
            rejected=data.get("rejected"),
            steps=list(data.get("steps") or []),
            meta=dict(data.get("meta") or {}),
            history=[dict(m) for m in data.get("history") or []],
            fields=dict(data.get("fields") or {}),
            reasoning=dict(data.get("reasoning") or {}),
            candidates=[Candidate.from_dict(c) for c in data.get("candidates") or []],
        )

    def content_hash(self) -> str:
        """Hash of everything in the record: the cache key of a stage's input."""
        return stable_hash(self.to_dict())


@dataclass(slots=True)
class Drop:
    """A record a stage removed, with the stage's name and the reason (goes to ``dropped.jsonl``)."""

    record: Record
    stage: str
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"stage": self.stage, "reason": self.reason, "record": self.record.to_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Drop:
        return cls(Record.from_dict(data["record"]), data["stage"], data["reason"])


def answer_key(answer: str) -> str:
    """The key of an answer's thinking in :attr:`Record.reasoning`."""
    return stable_hash(answer, 12)


def with_reasoning(record: Record, *answers: tuple[str | None, str | None]) -> Record:
    """``record`` with the thinking behind each (answer, thinking) pair, keeping only the thinking of answers it
    still holds (response, rejected, earlier assistant turns)."""
    found = {**record.reasoning, **{answer_key(a): r for a, r in answers if a and r}}
    if not found:
        return record
    held = [record.response, record.rejected, *(m["content"] for m in record.history if m["role"] == "assistant")]
    keys = {answer_key(text) for text in held if text}
    kept = {key: thought for key, thought in found.items() if key in keys}
    return record if kept == record.reasoning else replace(record, reasoning=kept)


def same_text(a: str, b: str) -> bool:
    """Equal once runs of whitespace are collapsed: such texts make no preference pair."""
    return " ".join(a.split()) == " ".join(b.split())


def reason_kind(reason: str) -> str:
    """A drop reason without its details (what follows ": " or " ("), for counting drops by kind."""
    return re.split(r": | \(", reason, maxsplit=1)[0]


def make_record_id(source: str, prompt: str, occurrence: int = 0, history: list[Message] | None = None) -> str:
    """Stable id from a record's origin and content (the prompt; with earlier turns, the whole conversation);
    ``occurrence`` separates repeated ones. A single prompt's id is what it was before conversations."""
    content: Any = prompt if not history else [*history, {"role": "user", "content": prompt}]
    return stable_hash([source, content, occurrence], 16)


def render_dialogue(messages: list[Message]) -> str:
    """A conversation as plain text, one ``Role: text`` paragraph per turn (for filters, dedup keys, reports)."""
    return "\n\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in messages)
