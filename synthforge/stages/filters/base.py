"""The filter contract (after datatrove): one method, ``filter(record) -> bool | (False, reason)``.

The base class turns a False verdict into a :class:`Drop` with the reason, so every removed record
lands in ``dropped.jsonl``. Filters never call the teacher and never change the records they keep.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import ClassVar

from synthforge.records import Drop, Record
from synthforge.stages.base import Stage
from synthforge.teachers.base import Teacher

FIELDS = ("prompt", "response", "rejected", "conversation")


class FilterStage(Stage):
    """Keeps or drops each record; subclasses implement :meth:`filter`."""

    uses_teacher: ClassVar[bool] = False

    def fields_read(self) -> tuple[str, ...]:
        """A filter reads the fields its settings name (``fields`` or ``field``; ``conversation``: the prompt)."""
        config = self.config
        if hasattr(config, "fields"):
            named = tuple(config.fields)
        elif hasattr(config, "field"):
            named = (config.field,)
        else:
            return self.reads
        return tuple(dict.fromkeys("prompt" if f == "conversation" else f for f in named))

    @abstractmethod
    def filter(self, record: Record) -> bool | tuple[bool, str]:
        """True to keep; False or (False, reason) to drop."""

    def verdicts(self, batch: list[Record]) -> list[bool | tuple[bool, str]]:
        """:meth:`filter` of each record; a filter that can judge a batch faster at once overrides this."""
        return [self.filter(record) for record in batch]

    def process(self, batch: list[Record], teacher: Teacher | None) -> list[Record | Drop]:
        results: list[Record | Drop] = []
        for record, verdict in zip(batch, self.verdicts(batch), strict=True):
            keep, reason = (verdict, self.kind) if isinstance(verdict, bool) else (verdict[0], verdict[1])
            results.append(record if keep else self.drop(record, reason))
        return results


def field_text(record: Record, field: str) -> str | None:
    """The text of ``field``: "prompt" (the last user turn), "response" (the final answer), "rejected", or
    "conversation" (every turn, the final answer too); None when the record has none."""
    if field == "conversation":
        return record.conversation_text()
    return getattr(record, field)


def finish_reason(record: Record, field: str = "response") -> str | None:
    """Why the teacher stopped writing the current ``field`` text ("stop", "length"), from the trace: the last
    step that says it ``writes`` that field with that text."""
    text = field_text(record, field)
    for step in reversed(record.steps):
        if field in step.get("writes", ()) and step.get("text") == text and "finish_reason" in step:
            return step["finish_reason"]
    return None


def check_fields(fields: tuple[str, ...] | list[str]) -> None:
    """Raise ValueError naming the allowed fields when one is unknown."""
    unknown = [f for f in fields if f not in FIELDS]
    if unknown:
        raise ValueError(f"unknown field {unknown[0]!r} (expected one of: {', '.join(FIELDS)})")
