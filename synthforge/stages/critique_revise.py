"""Critique and revise (SL-CAI): per round, draw a principle, ask for a critique, then a revision.

The final revision becomes ``response`` (SFT target, DPO chosen); the first answer becomes
``rejected``. Principles are drawn by weight, seeded per record, without replacement within a record.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace

from synthforge.constitution import Principle
from synthforge.records import Drop, Record
from synthforge.stages.base import PLACEHOLDER, Stage, completion_step
from synthforge.teachers.base import Conversation, SamplingParams, Teacher


@dataclass
class CritiqueReviseConfig:
    """Settings of the critique-revise stage."""

    constitution: str = "harmless"
    rounds: int = 1
    critique_template: str = "critique"
    revise_template: str = "revise"
    turns: str = "multi"
    sampling: SamplingParams = field(default_factory=lambda: SamplingParams(temperature=0.7, max_new_tokens=256))

    def __post_init__(self) -> None:
        if self.rounds < 1:
            raise ValueError("rounds must be >= 1")
        if self.turns not in ("multi", "single"):
            raise ValueError(
                "turns must be 'multi' (critique and revision as follow-up turns, as in the CAI "
                "paper) or 'single' (each request is one user message rendered by its template)"
            )


class CritiqueRevise(Stage):
    """Reads ``prompt`` and ``response``; writes the revised ``response`` and the original as ``rejected``."""

    kind = "critique_revise"
    Config = CritiqueReviseConfig
    reads = ("prompt", "response")
    writes = ("response", "rejected")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.constitution = self.use_constitution(self.config.constitution)
        self.critique_template = self.use_template("critique", self.config.critique_template)
        self.revise_template = self.use_template("revise", self.config.revise_template)

    def principles_for(self, record: Record) -> list[Principle]:
        """The principles of each round for ``record`` (seeded by record id)."""
        assert self.constitution is not None
        rng = random.Random(self.seed_for(record, "principles"))
        return self.constitution.sample(rng, self.config.rounds)

    def critique_conversation(self, prompt: str, response: str, principle: Principle) -> Conversation:
        """Multi-turn: the exchange so far, then the critique request. Single: the rendered request alone."""
        request = self.critique_template.render(principle=principle, prompt=prompt, response=response)
        if self.config.turns == "single":
            return [{"role": "user", "content": request}]
        return [
            {"role": "user", "content": prompt},
            {"role": "assistant", "content": response},
            {"role": "user", "content": request},
        ]

    def revise_conversation(self, prompt: str, response: str, principle: Principle, critique: str) -> Conversation:
        """Multi-turn: the critique exchange, then the revision request. Single: the rendered request alone."""
        request = self.revise_template.render(principle=principle, prompt=prompt, response=response, critique=critique)
        if self.config.turns == "single":
            return [{"role": "user", "content": request}]
        return [
            *self.critique_conversation(prompt, response, principle),
            {"role": "assistant", "content": critique},
            {"role": "user", "content": request},
        ]

    def process(self, batch: list[Record], teacher: Teacher | None) -> list[Record | Drop]:
        assert teacher is not None
        plans = [self.principles_for(r) for r in batch]
        current = [r.response or "" for r in batch]
        steps: list[list[dict]] = [list(r.steps) for r in batch]
        sampling = self.config.sampling
        for rnd in range(self.config.rounds):
            critiques = teacher.generate(
                [self.critique_conversation(r.prompt, current[i], plans[i][rnd]) for i, r in enumerate(batch)],
                [self.seeded(sampling, r, rnd, "critique") for r in batch],
            )
            revisions = teacher.generate(
                [
                    self.revise_conversation(r.prompt, current[i], plans[i][rnd], critiques[i][0].text)
                    for i, r in enumerate(batch)
                ],
                [self.seeded(sampling, r, rnd, "revision") for r in batch],
            )
            for i in range(len(batch)):
                principle = plans[i][rnd].name
                critique, revision = critiques[i][0], revisions[i][0]
                steps[i].append(completion_step(self.name, "critique", critique, round=rnd, principle=principle))
                steps[i].append(completion_step(self.name, "revision", revision, round=rnd, principle=principle))
                if revision.text:
                    current[i] = revision.text
        return [self._finish(r, current[i], steps[i]) for i, r in enumerate(batch)]

    def _finish(self, record: Record, final: str, steps: list[dict]) -> Record:
        original = record.response or ""
        meta = {**record.meta, "unchanged": final.strip() == original.strip()}
        return replace(record, response=final, rejected=original, steps=steps, meta=meta)

    def preview(self, record: Record) -> list[tuple[str, Conversation]]:
        principle = self.principles_for(record)[0]
        critique = PLACEHOLDER.format("critique")
        return [
            ("critique", self.critique_conversation(record.prompt, record.response or "", principle)),
            ("revision", self.revise_conversation(record.prompt, record.response or "", principle, critique)),
        ]
