"""Preference-pair sanity: drop pairs whose chosen equals rejected up to whitespace, or that lack a side."""

from __future__ import annotations

from dataclasses import dataclass

from synthforge.records import Record, same_text
from synthforge.stages.filters.base import FilterStage


@dataclass
class PairFilterConfig:
    """``require_pair``: also drop records that have no rejected answer (no pair at all)."""

    require_pair: bool = True


class PairFilter(FilterStage):
    kind = "filter_pairs"
    Config = PairFilterConfig

    def fields_read(self) -> tuple[str, ...]:
        return ("response", "rejected") if self.config.require_pair else ("response",)

    def filter(self, record: Record) -> bool | tuple[bool, str]:
        chosen, rejected = record.response, record.rejected
        if rejected is None:
            return (False, "no rejected answer") if self.config.require_pair else True
        if not (chosen or "").strip() or not rejected.strip():
            return False, "empty side of a preference pair"
        if same_text(chosen or "", rejected):
            return False, "chosen equals rejected (up to whitespace)"
        return True
