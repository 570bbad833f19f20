"""Principles, few-shot examples and the constitution that holds them."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Principle:
    """One principle: how to critique a response against it and how to revise it, and/or the question an AI
    judge answers when comparing two responses (a judge-only principle has ``compare`` alone), and/or a rubric
    aspect a rater scores one response on (``rate``: the aspect and its scale, for the ``rate`` stage)."""

    name: str
    critique: str
    revision: str
    compare: str | None = None
    weight: float = 1.0
    tags: tuple[str, ...] = ()
    line: int = 0
    rate: str | None = None  # after ``line``: principles built positionally keep their meaning

    @property
    def can_critique(self) -> bool:
        """It has a critique and a revision request (judge-only principles don't)."""
        return bool(self.critique and self.revision)


@dataclass(frozen=True, slots=True)
class FewShotExample:
    """A worked critique→revision exchange, prepended to prompts as earlier turns: a conversation (``history``:
    earlier (user, assistant) turns, then ``prompt`` and the ``response`` under review), then its rounds."""

    name: str
    prompt: str
    response: str
    critique_request: str
    critique: str
    revision_request: str
    revision: str
    line: int = 0
    # Further critique → revision rounds: (critique_request, critique, revision_request, revision) each.
    more_rounds: tuple[tuple[str, str, str, str], ...] = ()
    # Turns of the conversation before ``prompt``: (user, assistant) each, oldest first.
    history: tuple[tuple[str, str], ...] = ()

    def turns(self) -> list[str]:
        """The exchange's messages in order: user, assistant, user, assistant, …"""
        earlier = [text for pair in self.history for text in pair]
        first = [self.prompt, self.response, self.critique_request, self.critique, self.revision_request]
        return [*earlier, *first, self.revision, *(text for round_ in self.more_rounds for text in round_)]


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

    def critiquing(self) -> Constitution:
        """The principles that can critique and revise (judge-only ones left out), under the same hash."""
        kept = tuple(p for p in self.principles if p.can_critique)
        return Constitution(self.name, kept, self.examples, self.path, self.sha256)

    def judging(self) -> Constitution:
        """The principles that can judge (those with a ``compare:`` question), under the same hash."""
        kept = tuple(p for p in self.principles if p.compare)
        return Constitution(self.name, kept, self.examples, self.path, self.sha256)

    def sample(self, rng: random.Random, k: int) -> list[Principle]:
        """Draw ``k`` principles by weight without replacement; past the last principle, start a new draw."""
        drawn: list[Principle] = []
        while len(drawn) < k:
            # Efraimidis–Spirakis: the k largest u**(1/w) form a weighted sample without replacement.
            keyed = sorted(self.principles, key=lambda p: rng.random() ** (1.0 / p.weight), reverse=True)
            drawn.extend(keyed[: k - len(drawn)])
        return drawn
