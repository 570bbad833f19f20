"""Drop records whose text is empty or whitespace-only, or (optionally) was cut off at max_new_tokens."""

from __future__ import annotations

from dataclasses import dataclass

from synthforge.records import Record
from synthforge.stages.filters.base import FilterStage, check_fields, field_text, finish_reason


@dataclass
class EmptyFilterConfig:
    """``fields`` must hold non-blank text; ``truncated`` also drops texts that hit max_new_tokens."""

    fields: tuple[str, ...] = ("prompt", "response")
    truncated: bool = True

    def __post_init__(self) -> None:
        check_fields(self.fields)


class EmptyFilter(FilterStage):
    kind = "filter_empty"
    Config = EmptyFilterConfig

    def filter(self, record: Record) -> bool | tuple[bool, str]:
        for field in self.config.fields:
            text = field_text(record, field)
            if text is None or not text.strip():
                return False, f"empty {field}"
            if self.config.truncated and field != "prompt" and finish_reason(record, field) == "length":
                return False, f"truncated {field} (hit max_new_tokens)"
        return True
