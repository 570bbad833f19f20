"""The record that flows through a pipeline, and the drop that leaves it."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from synthforge.hashing import stable_hash


@dataclass(slots=True)
class Record:
    """One prompt and what the pipeline made of it.

    ``response`` is the current best answer (the SFT target and the DPO "chosen");
    ``rejected`` is the answer it beat, when a stage produced a preference.
    ``steps`` is the trace: one dict per teacher call or decision, in order.
    """

    id: str
    prompt: str
    response: str | None = None
    rejected: str | None = None
    steps: list[dict[str, Any]] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (the checkpoint and trace format)."""
        return {
            "id": self.id,
            "prompt": self.prompt,
            "response": self.response,
            "rejected": self.rejected,
            "steps": self.steps,
            "meta": self.meta,
        }

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


def make_record_id(source: str, prompt: str, occurrence: int = 0) -> str:
    """Stable id from a record's origin and content; ``occurrence`` separates repeated prompts."""
    return stable_hash([source, prompt, occurrence], 16)
