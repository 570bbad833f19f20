"""Find refusal-only answers (a short answer containing a refusal phrase) and drop them, or keep only them.

For helpfulness data refusals are noise; for harmlessness data they may be the point: ``action`` says which.
"""

from __future__ import annotations

from dataclasses import dataclass

from synthforge.records import Record
from synthforge.stages.filters.base import FilterStage, check_fields, field_text

DEFAULT_PHRASES = (
    "i can't help with",
    "i cannot help with",
    "i can't assist with",
    "i cannot assist with",
    "i can't provide",
    "i cannot provide",
    "i'm not able to",
    "i am not able to",
    "i'm unable to",
    "i am unable to",
    "i won't be able to",
    "i can't do that",
    "i cannot do that",
    "i must decline",
    "i'm sorry, but i can",
    "i'm sorry, but i cannot",
    "i apologize, but i can",
    "as an ai language model",
    "as an ai, i",
)
ACTIONS = ("drop", "keep_only")


@dataclass
class RefusalFilterConfig:
    """``phrases`` (case-insensitive, curly quotes folded); answers over ``max_words`` are not refusal-only."""

    field: str = "response"
    phrases: tuple[str, ...] = DEFAULT_PHRASES
    max_words: int = 40
    action: str = "drop"

    def __post_init__(self) -> None:
        check_fields([self.field])
        if self.action not in ACTIONS:
            raise ValueError(f"action must be one of {', '.join(ACTIONS)}")
        if not self.phrases:
            raise ValueError("phrases must not be empty")


def _fold(text: str) -> str:
    return " ".join(text.lower().replace("\u2019", "'").replace("\u2018", "'").split())


def is_refusal_only(text: str, phrases: tuple[str, ...], max_words: int) -> str | None:
    """The refusal phrase found when ``text`` is a short refusal, else None."""
    if len(text.split()) > max_words:
        return None
    folded = _fold(text)
    return next((p for p in phrases if _fold(p) in folded), None)


class RefusalFilter(FilterStage):
    kind = "filter_refusal"
    Config = RefusalFilterConfig

    def filter(self, record: Record) -> bool | tuple[bool, str]:
        text = field_text(record, self.config.field) or ""
        phrase = is_refusal_only(text, self.config.phrases, self.config.max_words)
        if self.config.action == "drop" and phrase:
            return False, f"refusal-only {self.config.field} ({phrase!r})"
        if self.config.action == "keep_only" and not phrase:
            return False, f"not a refusal ({self.config.field})"
        return True
