"""The AI judge's machinery, shared by ``judge``, ``verify_pairs`` and ``compare_judge``: a multiple-choice
question about two answers, read as P(A) from the teacher's log-probabilities of "(A)" and "(B)", asked in both
orders so that position bias cancels (and shows, as swap agreement)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from synthforge.constitution import Principle
from synthforge.records import Record
from synthforge.teachers.base import Conversation, Teacher, choice_logprobs

OPTIONS = ("(A)", "(B)")


def judge_question(
    template: Any, record: Record, principle: Principle, first: str, second: str, chain_of_thought: bool = False
) -> Conversation:
    """The judge's multiple-choice question: ``principle``'s compare question about ``first`` as (A) and
    ``second`` as (B) as final answers to ``record``'s conversation, rendered by ``template`` (``judge.j2``)."""
    text = template.render(
        prompt=record.prompt,
        history=record.history,
        question=principle.compare,
        response_a=first,
        response_b=second,
        chain_of_thought=chain_of_thought,
    )
    return [{"role": "user", "content": text}]


def option_probability(logprob_a: float, logprob_b: float) -> float:
    """P(A) from the two options' log-probabilities, normalised over the two."""
    top = max(logprob_a, logprob_b)
    a, b = math.exp(logprob_a - top), math.exp(logprob_b - top)
    return a / (a + b)


def clamp(p: float, low: float = 0.4, high: float = 0.6) -> float:
    """Chain-of-thought labels are over-confident; the CAI paper clamps them to [0.4, 0.6]."""
    return min(max(p, low), high)


def first_wins(p_ab: float, p_ba: float | None) -> float:
    """P(first response better) from the A-first order and, if asked, the swapped order (where it is B)."""
    return p_ab if p_ba is None else (p_ab + (1.0 - p_ba)) / 2.0


def swap_agrees(p_ab: float, p_ba: float) -> bool:
    """The judge picked the same answer whichever order it was shown in."""
    return (p_ab > 0.5) == (p_ba < 0.5)


def choose(teacher: Teacher, questions: Sequence[Conversation]) -> list[float]:
    """P(A) of each question, from the teacher's log-probabilities of answering "(A)" or "(B)" (one call)."""
    if not questions:
        return []
    scored = choice_logprobs(teacher, list(questions), [OPTIONS] * len(questions))
    return [option_probability(lp_a, lp_b) for lp_a, lp_b in scored]
