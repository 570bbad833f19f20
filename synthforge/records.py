"""The record that flows through a pipeline, and the drop that leaves it."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from synthforge.hashing import stable_hash

Message = dict[str, str]


@dataclass(slots=True)
class Record:
    """A conversation and what the pipeline made of it.

    ``history`` holds the turns before the last user turn (a system message first, if any), ``prompt`` that last
    user turn; a single prompt is the one-turn case (empty history). ``response`` is the current best answer to
    it — the final assistant turn (the SFT target and the DPO "chosen"); ``rejected`` is the alternative final
    turn it beat, when a stage produced a preference. ``steps`` is the trace: one dict per teacher call or
    decision, in order.
    """

    id: str
    prompt: str
    response: str | None = None
    rejected: str | None = None
    steps: list[dict[str, Any]] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    history: list[Message] = field(default_factory=list)

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
        return data

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
