"""What a run's teacher calls cost, from a price table (``prices:`` in a pipeline: per model, USD per million
input and output tokens, and the batch discount), and a ``--dry-run`` estimate before anything runs.

Tokens come from each trace step's usage (the server's count), attributed to the named teacher the step says it
called; a teacher in batch mode (``teacher.openai.batch``) pays its model's price less the batch discount. Steps of
a teacher whose model has no price are counted as unpriced tokens, never guessed. (``spec`` below is a
``PipelineSpec``; the spec module reads its ``prices:`` with :func:`price_table`, so this one doesn't import it.)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from synthforge.errors import UserError
from synthforge.records import Record
from synthforge.settings import SpecError, build_config
from synthforge.teachers.factory import prompt_tokenizer, teacher_settings
from synthforge.teachers.team import DEFAULT


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


def prompt_counter(spec: Any) -> tuple[Callable[[Any], float] | None, str]:
    """How the dry run counts the pipeline's prompts, and the words that say so: the default teacher's own
    tokenizer where one is here (its chat template included), else None (4 characters a token)."""
    from synthforge.models import prompt_token_counter  # torch and transformers: only for a priced dry run

    ref = prompt_tokenizer(spec.teacher)
    if ref is not None:
        try:
            return prompt_token_counter(ref), f"prompts counted by {ref}'s tokenizer and chat template"
        except (UserError, OSError, ValueError) as exc:
            return None, f"prompt text at 4 characters a token ({ref}'s tokenizer: {str(exc)[:80]})"
    return None, "prompt text at 4 characters a token (set teacher.openai.tokenizer to count them)"


def estimate(spec: Any, calls: Iterable[Any]) -> tuple[float, int] | None:
    """A dry run's bound on the teacher calls' cost, and the tokens of models without a price (counted apart): every
    answer each stage declares it may ask for (:class:`~synthforge.engine.prepare.StageCalls`), each taking its
    stage's whole ``max_new_tokens``; each piece of upstream model text in a prompt at the largest
    ``max_new_tokens`` of the stages so far; the rest of a prompt as counted (the teacher's tokenizer where there
    is one here, else 4 characters a token: the one estimate in it). A stage calling several teachers (a pool, a
    jury) is priced at its dearest. None without ``prices:``."""
    if not spec.prices:
        return None
    total, unpriced, longest = 0.0, 0, 0
    for stage in calls:
        longest = max(longest, stage.budget)
        if not stage.teachers:
            continue
        priced = [p for p in (_teacher_price(spec, name) for name in stage.teachers) if p[0] is not None]
        price, batch = max(priced, key=lambda p: p[0].of(1, 1, p[1]), default=(None, False))
        for role, count in stage.calls.items():
            prompt = stage.prompt_tokens.get(role, 0.0) + stage.placeholders.get(role, 0) * longest
            if price is None:
                unpriced += round((prompt + stage.budget) * count)
            else:
                total += price.of(prompt * count, stage.budget * count, batch)
    return total, unpriced
