"""Pairwise judge for model comparison: for every pair of models' answers to a prompt, the judge (the
pipeline's teacher) answers each principle's ``compare:`` question in both orders, as the RL-CAI judge does,
so position bias cancels. Each answer is also classified as a refusal or not (for safety and over-refusal).
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, field, replace
from typing import Any

from synthforge.annotations import ANSWERS, COMPARISONS, REFUSALS
from synthforge.constitution import Principle
from synthforge.records import Drop, Record
from synthforge.settings import OMIT_IF_DEFAULT, SpecError
from synthforge.stages.base import PLACEHOLDER, Stage
from synthforge.stages.filters.refusal import DEFAULT_PHRASES, is_refusal_only
from synthforge.stages.helpers.judging import (
    JURY,
    MAX_FLIP_RATE,
    Juried,
    Pair,
    SwapChecks,
    first_wins,
    judge_question,
    jury_pairs,
    jury_problem,
    measured_note,
    swap_agrees,
)
from synthforge.stages.helpers.metrics import GroupSpec, Metrics
from synthforge.teachers.base import CHOICE, Conversation, Teacher
from synthforge.trace import COMPARISON_STEP

REFUSAL_WORDS = 60  # an answer this short that contains a refusal phrase counts as a refusal


def position_noise(agreed: float, judged: float, threshold: float) -> str | None:
    """A note saying the verdicts are position noise when the two orders agree less often than ``threshold``."""
    if not judged or agreed / judged >= threshold:
        return None
    return (
        f"the judge's two orders agree on {agreed / judged:.0%} of {int(judged)} judgements (below "
        f"{threshold:.0%}): its verdicts follow the order the answers are shown in, so these win rates are "
        "position noise, not a comparison; use a stronger judge (--judge)"
    )


def refuses(text: str) -> bool:
    """A refusal (or no answer): empty, or short and containing a refusal phrase (the refusal filter's list)."""
    return not text.strip() or is_refusal_only(text, DEFAULT_PHRASES, REFUSAL_WORDS) is not None


@dataclass
class CompareJudgeConfig:
    """``principles``: how many compare questions per prompt (0: all of them); answers within ``tie_margin``
    of 0.5 count as ties."""

    constitution: str = "harmless"
    principles: int = 0
    template: str = "judge"
    tie_margin: float = 0.05
    # below it, the judge's verdicts follow the order answers are shown in: 1 - the one max_flip_rate (judging)
    min_swap_agreement: float = 1 - MAX_FLIP_RATE
    # a jury of named teachers (`teachers:`; none: the pipeline's teacher), and how their verdicts make one
    judges: list[str] = field(default_factory=list, metadata={OMIT_IF_DEFAULT: True})
    jury: str = field(default="mean", metadata={OMIT_IF_DEFAULT: True})
    judge_report: str | None = None  # the judge's measured `eval judge` report (manifest, notes; not the cache key)

    def __post_init__(self) -> None:
        problem = jury_problem(self.judges)
        if problem or self.jury not in JURY:
            raise ValueError(f"judges: {problem}" if problem else f"jury must be one of {', '.join(JURY)}")
        if not 0 <= self.min_swap_agreement <= 1:
            raise ValueError("min_swap_agreement must be in [0, 1]")
        if self.principles < 0:
            raise ValueError("principles must be >= 0 (0: all)")
        if not 0 <= self.tie_margin < 0.5:
            raise ValueError("tie_margin must be in [0, 0.5)")


class CompareJudge(Juried, Stage):
    """Reads ``meta.answers``; writes ``meta.comparisons`` and ``meta.refusals``."""

    kind = "compare_judge"
    traces = (COMPARISON_STEP,)
    annotates = (COMPARISONS, REFUSALS)
    Config = CompareJudgeConfig
    reads = ("prompt",)
    needs = frozenset({CHOICE})
    metric_groups = {
        "principle": GroupSpec(
            counts=("compared",),
            rates={"swap_agreement": ("swap_agreed", "compared")},
            labels={"compared": "comparisons", "swap_agreement": "swap agreement"},
        )
    }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        constitution = self.use_constitution(self.config.constitution)
        self.judging = constitution.judging()
        self.principles = self.judging.principles
        if not self.principles:
            raise SpecError(
                f"{self.where}.constitution: {constitution.name} has no 'compare:' questions; the judge needs them"
            )
        self.template = self.use_template("judge", self.config.template)

    def tally(self, step: dict, metrics: Metrics) -> None:
        if COMPARISON_STEP.is_(step):
            agreed = swap_agrees(step["ab"], step["ba"])
            metrics.add("principle", step["principle"], compared=1, swap_agreed=agreed)
            metrics.count("compared")
            metrics.count("swap_agreed", agreed)

    def notes(self, summary: dict) -> list[str]:
        """The verdicts mean nothing when the judge's two orders mostly disagree (a position-biased judge)."""
        counters = summary.get("counters", {})
        note = position_noise(
            counters.get("swap_agreed", 0), counters.get("compared", 0), self.config.min_swap_agreement
        )
        measured = self.measured()
        return [n for n in (note, measured_note(measured) if measured else None) if n]

    def _principles(self, record: Record) -> list[Principle]:
        if not self.config.principles or self.config.principles >= len(self.principles):
            return list(self.principles)
        return self.judging.sample(random.Random(self.seed_for(record, "principles")), self.config.principles)

    def fingerprint(self) -> dict[str, Any]:
        """Its principles are drawn by weight, as the other stages draw them (once drawn unweighted: older
        results are recomputed)."""
        return {**super().fingerprint(), "principle_draw": "weighted"}

    def question(self, record: Record, principle: Principle, first: str, second: str) -> Conversation:
        return judge_question(self.template, record, principle, first, second)

    def judged(self, batch: list[Record], teacher: Teacher, judges: dict[str, Teacher]) -> list[Record | Drop]:
        """Every pair of models' answers judged by each of ``judges`` (one, or a jury), both orders each."""
        asked: list[tuple[int, str, str]] = []
        pairs: list[Pair] = []
        for i, record in enumerate(batch):
            answers = ANSWERS.of(record) or {}
            principles = tuple(self._principles(record))
            for a, b in itertools.combinations(list(answers), 2):
                asked.append((i, a, b))
                pairs.append(Pair(record, answers[a], answers[b], principles))
        checks = SwapChecks(judges=self.config.judges, jury=self.config.jury)
        judged = jury_pairs(judges, self.template, pairs, checks)
        results: list[Record | Drop] = []
        for i, record in enumerate(batch):
            steps, comparisons = list(record.steps), []
            for (j, a, b), (verdict, jury) in zip(asked, judged, strict=True):
                if j != i:
                    continue
                votes = {} if jury is None else {"teacher": None, "judges": list(jury.votes), "votes": jury.votes}
                for name, p_ab in verdict.ab.items():
                    p_ba = verdict.ba[name]
                    p_a = first_wins(p_ab, p_ba)  # P(a's answer better), both orders averaged
                    comparisons.append({"a": a, "b": b, "principle": name, "p_a": p_a})
                    steps.append(
                        COMPARISON_STEP.make(self.name, a=a, b=b, principle=name, p_a=p_a, ab=p_ab, ba=p_ba, **votes)
                    )
            refusals = {label: refuses(text) for label, text in (ANSWERS.of(record) or {}).items()}
            results.append(REFUSALS.on(COMPARISONS.on(replace(record, steps=steps), comparisons), refusals))
        return results

    def most_calls(self, records: int, candidates: int) -> dict[str, int]:
        principles = self.config.principles or len(self.principles)
        return {"comparison": records * principles * 2 * max(1, len(self.config.judges))}  # both orders

    def preview(self, record: Record) -> list[tuple[str, Conversation]]:
        first, second = PLACEHOLDER.format("answer of model A"), PLACEHOLDER.format("answer of model B")
        return [("comparison", self.question(record, self.principles[0], first, second))]
