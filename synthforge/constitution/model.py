"""Principles, few-shot examples and the constitution that holds them."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Principle:
    """One principle: how to critique a response against it and how to revise it."""

    name: str
    critique: str
    revision: str
    compare: str | None = None
    weight: float = 1.0
    tags: tuple[str, ...] = ()
    line: int = 0


@dataclass(frozen=True, slots=True)
class FewShotExample:
    """A worked critique→revision exchange, prepended to prompts as earlier turns."""

    name: str
    prompt: str
    response: str
    critique_request: str
    critique: str
    revision_request: str
    revision: str
    line: int = 0


@dataclass(frozen=True, slots=True)
class Constitution:
    """A named, hashed set of principles loaded from one file."""

    name: str
    principles: tuple[Principle, ...]
    examples: tuple[FewShotExample, ...] = ()
    path: Path | None = None
    sha256: str = ""
    by_name: dict[str, Principle] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        self.by_name.update({p.name: p for p in self.principles})

    def sample(self, rng: random.Random, k: int) -> list[Principle]:
        """Draw ``k`` principles by weight without replacement; past the last principle, start a new draw."""
        drawn: list[Principle] = []
        while len(drawn) < k:
            # Efraimidis–Spirakis: the k largest u**(1/w) form a weighted sample without replacement.
            keyed = sorted(self.principles, key=lambda p: rng.random() ** (1.0 / p.weight), reverse=True)
            drawn.extend(keyed[: k - len(drawn)])
        return drawn
