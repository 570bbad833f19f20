"""What a run's teacher calls cost, from a price table (``prices:`` in a pipeline: per model, USD per million
input and output tokens, and the batch discount), and a ``--dry-run`` estimate before anything runs.

Tokens come from each trace step's usage (the server's count), attributed to the named teacher the step says it
called; a teacher in batch mode (``teacher.openai.batch``) pays its model's price less the batch discount. Steps of
a teacher whose model has no price are counted as unpriced tokens, never guessed. (``spec`` below is a
``PipelineSpec``; the spec module reads its ``prices:`` with :func:`price_table`, so this one doesn't import it.)
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from synthforge.records import Record
from synthforge.settings import SpecError, build_config
from synthforge.teachers.factory import teacher_settings
from synthforge.teachers.team import DEFAULT

CHARS_PER_TOKEN = 4.0  # the dry run's estimate of a prompt's tokens (no tokenizer is loaded then)


@dataclass(frozen=True)
class Price:
    """A model's price in USD per million tokens, and the share a batch takes off."""

    input: float  # USD per million input (prompt) tokens
    output: float  # USD per million output (completion) tokens
    batch_discount: float = 0.5  # the share taken off in batch mode (OpenAI's and Anthropic's batches: half)

    def __post_init__(self) -> None:
        if not all(math.isfinite(v) and v >= 0 for v in (self.input, self.output)):
            raise ValueError("input and output must be finite prices >= 0")
        if not 0 <= self.batch_discount < 1:
            raise ValueError(f"batch_discount must be in [0, 1), got {self.batch_discount}")

    def of(self, prompt_tokens: float, completion_tokens: float, batch: bool) -> float:
        usd = (prompt_tokens * self.input + completion_tokens * self.output) / 1e6
        return usd * (1 - self.batch_discount) if batch else usd


def price_table(data: Any, where: str) -> dict[str, Price]:
    """The ``prices:`` mapping: a model name (as the teacher names it) to its :class:`Price`."""
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SpecError(f"{where}: expected a mapping of model names to prices, got {type(data).__name__}")
    return {str(model): build_config(Price, value, f"{where}.{model}") for model, value in data.items()}


def _teacher_price(spec: Any, name: str) -> tuple[Price | None, bool]:
    """(the price of teacher ``name``'s model, whether it sends batches)."""
    teacher = spec.teacher_spec_of(name) if name == DEFAULT or name in spec.teachers else None
    if teacher is None:
        return None, False
    section = teacher_settings(teacher).get(teacher.backend) or {}
    return spec.prices.get(teacher.model), bool(section.get("batch"))


def run_costs(spec: Any, records: Iterable[Record]) -> dict[str, Any] | None:
    """Per stage and in all: USD, and the tokens with no price; None when the pipeline has no ``prices:``."""
    if not spec.prices:
        return None
    by_stage: dict[str, dict[str, float]] = {}
    for record in records:
        for step in record.steps:
            prompt, completion = step.get("prompt_tokens") or 0, step.get("completion_tokens") or 0
            if not prompt and not completion:
                continue
            entry = by_stage.setdefault(step.get("stage", "?"), {"usd": 0.0, "unpriced_tokens": 0})
            price, batch = _teacher_price(spec, step.get("teacher") or DEFAULT)
            if price is None:
                entry["unpriced_tokens"] += prompt + completion
            else:
                entry["usd"] += price.of(prompt, completion, batch)
    rounded = {
        name: {"usd": round(e["usd"], 6), "unpriced_tokens": int(e["unpriced_tokens"])} for name, e in by_stage.items()
    }
    return {
        "currency": "USD",
        "total_usd": round(sum(e["usd"] for e in by_stage.values()), 6),
        "unpriced_tokens": int(sum(e["unpriced_tokens"] for e in by_stage.values())),
        "by_stage": rounded,
    }


def estimate(
    spec: Any, seeds: int, prompts: list[tuple[str, str, list[dict[str, str]]]], budgets: dict[str, int]
) -> float | None:
    """A dry run's estimate of the teacher calls' cost: each shown prompt (4 characters a token) asked once per
    seed record and answered with its stage's whole ``max_new_tokens``; None without ``prices:``. Prompts that
    depend on earlier answers are estimated from the placeholder's size, and stages that ask more than once per
    record (rounds, principles, samples) more than shown: read it as an order of magnitude."""
    if not spec.prices:
        return None
    price, batch = _teacher_price(spec, DEFAULT)
    if price is None:
        return None
    total = 0.0
    for stage, _role, conversation in prompts:
        tokens = sum(len(m["content"]) for m in conversation) / CHARS_PER_TOKEN
        total += price.of(tokens * seeds, budgets.get(stage, 256) * seeds, batch)
    return total
