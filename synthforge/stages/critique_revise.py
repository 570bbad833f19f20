"""Critique and revise (SL-CAI): per round, draw a principle, ask for a critique, then a revision.

The final revision becomes ``response`` (SFT target, DPO chosen); the first answer becomes
``rejected``. A critique that finds nothing to fix skips that round's revision (``skip_when_no_issue``).
Principles are drawn by weight, seeded per record, without replacement within a record.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace
from typing import Any

from synthforge.annotations import UNCHANGED
from synthforge.constitution import Principle
from synthforge.records import Drop, Record, same_text, with_reasoning
from synthforge.settings import SpecError
from synthforge.stages.base import PLACEHOLDER, Stage
from synthforge.stages.helpers.critique_text import finds_no_issue
from synthforge.stages.helpers.metrics import GroupSpec, Metrics
from synthforge.stages.helpers.revision_text import clean_revision, edit_fraction
from synthforge.teachers.base import Completion, Conversation, SamplingParams, Teacher
from synthforge.trace import CRITIQUE_STEP, REVISION_STEP


@dataclass
class CritiqueReviseConfig:
    """Settings of the critique-revise stage."""

    constitution: str = "harmless"
    rounds: int = 1
    critique_template: str = "critique"
    revise_template: str = "revise"
    turns: str = "multi"
    critique: bool = True
    few_shot: int = 0
    clean_revisions: bool = True
    skip_when_no_issue: bool = True
    drop_truncated: bool = False
    sampling: SamplingParams = field(default_factory=lambda: SamplingParams(temperature=0.7, max_new_tokens=256))

    def __post_init__(self) -> None:
        if self.rounds < 1:
            raise ValueError("rounds must be >= 1")
        if self.few_shot < 0:
            raise ValueError("few_shot must be >= 0")
        if self.turns not in ("multi", "single"):
            raise ValueError(
                "turns must be 'multi' (critique and revision as follow-up turns, as in the CAI "
                "paper) or 'single' (each request is one user message rendered by its template)"
            )


class CritiqueRevise(Stage):
    """Reads ``prompt`` and ``response``; writes the revised ``response`` and the original as ``rejected``."""

    kind = "critique_revise"
    traces = (CRITIQUE_STEP, REVISION_STEP)
    annotates = (UNCHANGED,)
    tags = ("constitutional-ai",)
    Config = CritiqueReviseConfig
    reads = ("prompt", "response")
    writes = ("response", "rejected")
    metric_groups = {
        "principle": GroupSpec(
            counts=("critiques", "revisions"),
            rates={
                "critique_change_rate": ("asked_change", "critiques"),
                "revision_change_rate": ("changed", "revisions"),
                "mean_edit_fraction": ("edit_total", "revisions"),
            },
            labels={
                "critique_change_rate": "asked for change",
                "revision_change_rate": "changed",
                "mean_edit_fraction": "mean edit",
            },
        )
    }

    def tally(self, step: dict, metrics: Metrics) -> None:
        """Per principle: critiques and how often they asked for a change; revisions, how often they changed
        the answer and the share of words they edited."""
        if CRITIQUE_STEP.is_(step) and "principle" in step:
            metrics.add("principle", step["principle"], critiques=1, asked_change=bool(step.get("asks_change", True)))
        elif REVISION_STEP.is_(step) and "principle" in step and "changed" in step:
            metrics.add(
                "principle",
                step["principle"],
                revisions=1,
                changed=bool(step["changed"]),
                edit_total=float(step.get("edit_fraction", 0.0)),
            )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        loaded = self.use_constitution(self.config.constitution)
        self.constitution = loaded.critiquing()
        if not self.constitution.principles:
            raise SpecError(
                f"{self.where}.constitution: {loaded.name} has no principle with critique and revision requests "
                "(only 'compare:' questions, which are for the judge stage): nothing to critique with"
            )
        self.critique_template = self.use_template("critique", self.config.critique_template)
        self.revise_template = self.use_template("revise", self.config.revise_template)
        available = len(self.constitution.examples)
        if self.config.few_shot > available:
            raise SpecError(
                f"{self.where}.few_shot: {self.config.few_shot} examples asked, but constitution "
                f"{self.constitution.name} has {available} ([example: ...] blocks)"
            )
        self.shots = self._few_shot_turns()

    def _few_shot_turns(self) -> Conversation:
        """The constitution's first ``few_shot`` examples as earlier conversation turns."""
        assert self.constitution is not None
        turns: Conversation = []
        for example in self.constitution.examples[: self.config.few_shot]:
            texts = example.turns()  # user/assistant turns, alternating
            turns += [{"role": "user" if i % 2 == 0 else "assistant", "content": t} for i, t in enumerate(texts)]
        return turns

    def _exchange(self, record: Record, response: str) -> Conversation:
        """The conversation under review: its system message, the few-shot turns, its earlier turns, its last user
        turn and the answer under review (the final assistant turn the critique targets)."""
        system = record.history[:1] if record.system is not None else []
        earlier = record.history[len(system) :]
        answer = {"role": "assistant", "content": response}
        return [*system, *self.shots, *earlier, {"role": "user", "content": record.prompt}, answer]

    def _values(self, record: Record, response: str, principle: Principle) -> dict[str, Any]:
        return {"principle": principle, "prompt": record.prompt, "response": response, "history": record.history}

    def principles_for(self, record: Record) -> list[Principle]:
        """The principles of each round for ``record`` (seeded by record id)."""
        assert self.constitution is not None
        rng = random.Random(self.seed_for(record, "principles"))
        return self.constitution.sample(rng, self.config.rounds)

    def critique_conversation(self, record: Record, response: str, principle: Principle) -> Conversation:
        """Multi-turn: the whole conversation, then the critique request. Single: the rendered request alone (its
        template sees the earlier turns as ``history``)."""
        request = self.critique_template.render(**self._values(record, response, principle))
        if self.config.turns == "single":
            return [*self.shots, {"role": "user", "content": request}]
        return [*self._exchange(record, response), {"role": "user", "content": request}]

    def revise_conversation(self, record: Record, response: str, principle: Principle, critique: str) -> Conversation:
        """Multi-turn: the critique exchange, then the revision request. Single: the rendered request alone.

        Without a critique (``critique: false``) the revision request follows the first answer directly.
        """
        request = self.revise_template.render(**self._values(record, response, principle), critique=critique)
        if self.config.turns == "single":
            return [*self.shots, {"role": "user", "content": request}]
        if not self.config.critique:
            return [*self._exchange(record, response), {"role": "user", "content": request}]
        return [
            *self.critique_conversation(record, response, principle),
            {"role": "assistant", "content": critique},
            {"role": "user", "content": request},
        ]

    def process(self, batch: list[Record], teacher: Teacher | None) -> list[Record | Drop]:
        assert teacher is not None
        plans = [self.principles_for(r) for r in batch]
        current = [r.response or "" for r in batch]
        steps: list[list[dict]] = [list(r.steps) for r in batch]
        truncated = [False] * len(batch)
        thoughts: list[str | None] = [None] * len(batch)  # the thinking behind each record's latest revision
        for rnd in range(self.config.rounds):
            critiques = self._critiques(batch, current, plans, rnd, teacher)
            asks = [c is None or not (self.config.skip_when_no_issue and finds_no_issue(c.text)) for c in critiques]
            for i, critique in enumerate(critiques):
                if critique is not None:
                    principle = plans[i][rnd].name
                    seen = _seen(batch[i])
                    steps[i].append(
                        CRITIQUE_STEP.answer(
                            self.name, critique, round=rnd, principle=principle, asks_change=asks[i], **seen
                        )
                    )
            todo = [i for i, ask in enumerate(asks) if ask]
            revisions = self._revisions(batch, current, plans, rnd, critiques, todo, teacher)
            for i, completions in zip(todo, revisions, strict=True):
                revision = completions[0]
                text = clean_revision(revision.text) if self.config.clean_revisions else revision.text
                text = text or current[i]
                step = REVISION_STEP.answer(
                    self.name,
                    revision,
                    round=rnd,
                    principle=plans[i][rnd].name,
                    changed=not same_text(text, current[i]),
                    edit_fraction=edit_fraction(current[i], text),
                    writes=["response"],
                    **_seen(batch[i]),
                )
                steps[i].append({**step, "text": text, "raw_text": revision.text} if text != revision.text else step)
                current[i] = text
                thoughts[i] = revision.reasoning if revision.text else thoughts[i]
                truncated[i] = revision.finish_reason == "length"
        return [self._finish(r, current[i], steps[i], truncated[i], thoughts[i]) for i, r in enumerate(batch)]

    def _revisions(self, batch, current, plans, rnd, critiques, todo, teacher) -> list[list[Completion]]:
        """Revisions for the records in ``todo`` (those whose critique asked for a change)."""
        if not todo:
            return []
        return teacher.generate(
            [self.revise_conversation(batch[i], current[i], plans[i][rnd], _text(critiques[i])) for i in todo],
            [self.seeded(self.config.sampling, batch[i], rnd, "revision") for i in todo],
        )

    def _critiques(self, batch, current, plans, rnd, teacher) -> list[Completion | None]:
        """One critique per record for round ``rnd``, or ``None`` each when revising without critiques."""
        if not self.config.critique:
            return [None] * len(batch)
        done = teacher.generate(
            [self.critique_conversation(r, current[i], plans[i][rnd]) for i, r in enumerate(batch)],
            [self.seeded(self.config.sampling, r, rnd, "critique") for r in batch],
        )
        return [completions[0] for completions in done]

    def _finish(
        self, record: Record, final: str, steps: list[dict], truncated: bool, thought: str | None = None
    ) -> Record | Drop:
        """The revised record, or a drop when its final revision was cut off and ``drop_truncated`` is set."""
        original = record.response or ""
        annotated = UNCHANGED.on(record, same_text(final, original))
        revised = with_reasoning(replace(annotated, response=final, rejected=original, steps=steps), (final, thought))
        if truncated and self.config.drop_truncated:
            return self.drop(revised, "truncated revision (hit max_new_tokens)")
        return revised

    def most_calls(self, records: int, candidates: int) -> dict[str, int]:
        rounds = records * self.config.rounds
        return {"critique": rounds if self.config.critique else 0, "revision": rounds}

    def preview(self, record: Record) -> list[tuple[str, Conversation]]:
        principle = self.principles_for(record)[0]
        critique = PLACEHOLDER.format("critique")
        return [
            ("critique", self.critique_conversation(record, record.response or "", principle)),
            ("revision", self.revise_conversation(record, record.response or "", principle, critique)),
        ]


def _seen(record: Record) -> dict[str, int]:
    """What of a conversation a critique or revision saw, for the trace (said only for several turns)."""
    return {"context_turns": record.turns} if record.history else {}


def _text(completion: Completion | None) -> str:
    return completion.text if completion is not None else ""
