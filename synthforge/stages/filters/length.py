"""Drop records whose prompt or response is shorter or longer than bounds, in characters, words or tokens."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from synthforge.records import Record
from synthforge.stages.filters.base import FilterStage, field_text

UNITS = ("chars", "words", "tokens")


@dataclass
class Bounds:
    """Inclusive ``min`` and ``max`` length; None leaves that side open."""

    min: int | None = None
    max: int | None = None

    def __post_init__(self) -> None:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is above max ({self.max})")


@dataclass
class LengthFilterConfig:
    """Bounds per field; ``unit`` "tokens" counts with ``tokenizer`` (a model directory, or "embedded")."""

    unit: str = "chars"
    tokenizer: str | None = None
    prompt: Bounds = field(default_factory=Bounds)
    response: Bounds = field(default_factory=Bounds)

    def __post_init__(self) -> None:
        if self.unit not in UNITS:
            raise ValueError(f"unit must be one of {', '.join(UNITS)}")
        if self.unit == "tokens" and not self.tokenizer:
            raise ValueError("unit 'tokens' needs 'tokenizer' (a model directory, or 'embedded')")


class LengthFilter(FilterStage):
    kind = "filter_length"
    Config = LengthFilterConfig

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._measure: Callable[[str], int] | None = None

    def fields_read(self) -> tuple[str, ...]:
        bounded = {"prompt": self.config.prompt, "response": self.config.response}
        return tuple(name for name, b in bounded.items() if b.min is not None or b.max is not None)

    def measure(self, text: str) -> int:
        """Length of ``text`` in the configured unit (the tokenizer loads on first use)."""
        if self._measure is None:
            self._measure = _measurer(self.config.unit, self.config.tokenizer)
        return self._measure(text)

    def filter(self, record: Record) -> bool | tuple[bool, str]:
        unit = self.config.unit
        for name in ("prompt", "response"):
            bounds: Bounds = getattr(self.config, name)
            text = field_text(record, name)
            if text is None or (bounds.min is None and bounds.max is None):
                continue
            size = self.measure(text)
            if bounds.min is not None and size < bounds.min:
                return False, f"{name} too short ({size} < {bounds.min} {unit})"
            if bounds.max is not None and size > bounds.max:
                return False, f"{name} too long ({size} > {bounds.max} {unit})"
        return True


def _measurer(unit: str, tokenizer: str | None) -> Callable[[str], int]:
    if unit == "chars":
        return len
    if unit == "words":
        return lambda text: len(text.split())
    from synthforge.models import load_tokenizer

    loaded = load_tokenizer(str(tokenizer))
    return lambda text: len(loaded(text, add_special_tokens=False)["input_ids"])
