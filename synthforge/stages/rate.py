"""A pointwise rubric judge: each candidate answer scored from 1 to ``scale`` on every aspect of a rubric (the
``rate:`` questions of a constitution, e.g. ``constitutions/ultrafeedback.txt``), as UltraFeedback rates its
answers. A score is read, by the first way the teacher allows (``scoring: auto``):

- ``json``: a JSON object ``{"reasoning", "score"}`` decoded under its schema (teachers with structured output);
- ``logprobs``: the expected score under the teacher's probabilities of answering each digit (one scored token);
- ``text``: the first number from 1 to ``scale`` in a free answer (a hosted API with neither), said so in the
  trace.

Each rating is a trace step (``role: rating``) with its score, method and the rater's ``rationale`` (json) or
digit ``probabilities`` (logprobs); each candidate keeps its scores per aspect
(:class:`~synthforge.records.Candidate`). Records without candidates have their ``response`` (and ``rejected``)
rated as candidates (``answers: response``).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from synthforge.constitution import Principle
from synthforge.records import Candidate, Drop, Record
from synthforge.settings import SpecError
from synthforge.stages.base import PLACEHOLDER, Stage
from synthforge.stages.helpers.judging import jury_problem
from synthforge.stages.helpers.metrics import GroupSpec, Metrics
from synthforge.teachers.base import CHOICE, STRUCTURED, Conversation, SamplingParams, Teacher, choice_logprobs
from synthforge.trace import RATING_STEP

SCORING = ("auto", "json", "logprobs", "text")
ANSWERS = ("candidates", "response")


@dataclass
class RateConfig:
    """Settings of the rate stage."""

    rubric: str = "ultrafeedback"  # a constitution whose principles' `rate:` questions are the aspects
    template: str = "rate"  # the rater's question (prompts/rate.j2)
    scale: int = 5  # scores run from 1 to scale (at most 9: each score is one digit)
    # auto: json where the teacher constrains output to a schema, else logprobs, else text; or one of them
    scoring: str = "auto"
    answers: str = "candidates"  # what is rated: the pool's candidates, or the record's response (and rejected)
    judges: list[str] = field(default_factory=list)  # raters by name (`teachers:`), scores their mean; none: teacher
    sampling: SamplingParams = field(default_factory=lambda: SamplingParams(temperature=0.0, max_new_tokens=160))

    def __post_init__(self) -> None:
        if not 2 <= self.scale <= 9:
            raise ValueError(f"scale must be from 2 to 9 (one digit per score), got {self.scale}")
        if self.scoring not in SCORING:
            raise ValueError(f"scoring must be one of {', '.join(SCORING)}, got {self.scoring!r}")
        if self.answers not in ANSWERS:
            raise ValueError(f"answers must be one of {', '.join(ANSWERS)}, got {self.answers!r}")
        problem = jury_problem(self.judges)
        if problem:
            raise ValueError(f"judges: {problem} (one rater: teacher:)")


@dataclass(frozen=True)
class Rating:
    """One score of one candidate on one aspect, and how it was read (None: no score could be read)."""

    score: float | None
    method: str
    detail: dict[str, Any]


class Rate(Stage):
    """Reads ``prompt`` and ``candidates`` (or ``response``); writes each candidate's ``scores``."""

    kind = "rate"
    traces = (RATING_STEP,)
    tags = ("rlaif",)
    Config = RateConfig
    writes = ("candidates",)
    metric_groups = {
        "aspect": GroupSpec(
            counts=("rated", "unscored"),
            rates={},
            means={"mean_score": ("score_sum", "scored")},
            labels={"rated": "ratings", "unscored": "no score read", "mean_score": "mean score"},
        )
    }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        rubric = self.use_constitution(self.config.rubric)
        self.aspects = tuple(p for p in rubric.principles if p.rate)
        if not self.aspects:
            raise SpecError(f"{self.where}.rubric: {rubric.name} has no 'rate:' questions (the rubric's aspects)")
        self.template = self.use_template("rate", self.config.template)
        self.method = self._method()
        needed = {"logprobs": CHOICE, "json": STRUCTURED}.get(self.method)
        if needed is not None:
            self.needs = self.needs | {needed}

    def _method(self) -> str:
        """How scores are read: as configured, or (auto) the first of json, logprobs, text the teacher allows (every
        rater of a jury: the engine passes what they all can do)."""
        if self.config.scoring != "auto":
            return self.config.scoring
        have = self.resources.capabilities or frozenset()
        return "json" if STRUCTURED in have else "logprobs" if CHOICE in have else "text"

    def fields_read(self) -> tuple[str, ...]:
        return ("prompt", self.config.answers)

    def fingerprint(self) -> dict[str, Any]:
        return {**super().fingerprint(), "method": self.method}

    def tally(self, step: dict, metrics: Metrics) -> None:
        if RATING_STEP.is_(step):
            score = step.get("score")
            metrics.add(
                "aspect",
                step["aspect"],
                rated=1,
                unscored=score is None,
                scored=score is not None,
                score_sum=score or 0.0,
            )
            metrics.count(f"method_{step['method']}")

    def notes(self, summary: dict) -> list[str]:
        counters = summary.get("counters", {})
        notes = []
        unscored = sum(v.get("unscored", 0) for v in summary.get("groups", {}).get("aspect", {}).values())
        if unscored:
            notes.append(
                f"{int(unscored)} ratings had no readable score (e.g. an answer cut at max_new_tokens): those "
                "aspects are left out of their candidates' mean scores"
            )
        if counters.get("method_text"):
            notes.append(
                f"{int(counters['method_text'])} scores were parsed from the rater's text (no structured output "
                "or log-probabilities): they are whole numbers, and unreadable answers have no score"
            )
        return notes

    def question(self, record: Record, aspect: Principle, answer: str) -> Conversation:
        text = self.template.render(
            prompt=record.prompt,
            history=record.history,
            aspect=aspect.rate,
            response=answer,
            scale=self.config.scale,
            json=self.method == "json",
        )
        return [{"role": "user", "content": text}]

    def candidates_of(self, record: Record) -> list[Candidate]:
        """What is rated: the record's candidates, or its response (and rejected) as candidates."""
        if self.config.answers == "candidates":
            return list(record.candidates)
        answers = [("response", record.response), ("rejected", record.rejected)]
        return [Candidate(text=text, member=name) for name, text in answers if text]

    def teacher_names(self) -> tuple[str, ...]:
        return tuple(self.config.judges) or (self.teacher_name,)

    def run_batch(self, batch: list[Record], team: Mapping[str, Teacher]) -> list[Record | Drop]:
        return self.rated(batch, {name: team[name] for name in self.teacher_names()})

    def process(self, batch: list[Record], teacher: Teacher | None) -> list[Record | Drop]:
        """With one teacher standing in for every rater (tests)."""
        assert teacher is not None
        return self.rated(batch, dict.fromkeys(self.teacher_names(), teacher))

    def rated(self, batch: list[Record], raters: dict[str, Teacher]) -> list[Record | Drop]:
        """Every candidate scored on every aspect by each rater; a candidate's score on an aspect is the mean of
        the raters' readable scores. Each rating step names its rater (``teacher``)."""
        asks = [
            (i, k, aspect, self.question(record, aspect, candidate.text))
            for i, record in enumerate(batch)
            for k, candidate in enumerate(self.candidates_of(record))
            for aspect in self.aspects
        ]
        by_rater = {name: self._ratings(rater, batch, asks) for name, rater in raters.items()}
        results: list[Record | Drop] = []
        for i, record in enumerate(batch):
            candidates = self.candidates_of(record)
            if not candidates:
                results.append(self.drop(record, f"nothing to rate (no {self.config.answers})"))
                continue
            scores: list[dict[str, list[float]]] = [{} for _ in candidates]
            steps = list(record.steps)
            for name, ratings in by_rater.items():
                for (j, k, aspect, _), rating in zip(asks, ratings, strict=True):
                    if j != i:
                        continue
                    if rating.score is not None:
                        scores[k].setdefault(aspect.name, []).append(rating.score)
                    steps.append({**self._step(candidates[k], k, aspect, rating), "teacher": name})
            rated = [
                replace(c, scores={**c.scores, **{a: sum(v) / len(v) for a, v in s.items()}})
                for c, s in zip(candidates, scores, strict=True)
            ]
            results.append(replace(record, candidates=rated, steps=steps))
        return results

    def _step(self, candidate: Candidate, k: int, aspect: Principle, rating: Rating) -> dict[str, Any]:
        who = {"candidate": k, "member": candidate.member, "teacher_of_answer": candidate.teacher}
        step = {"aspect": aspect.name, "score": rating.score, "method": rating.method, **who}
        if "completion" in rating.detail:
            more = {k: v for k, v in rating.detail.items() if k != "completion"}
            return RATING_STEP.answer(self.name, rating.detail["completion"], **step, **more)
        return RATING_STEP.make(self.name, **step, **rating.detail)

    def _ratings(self, teacher: Teacher, batch: list[Record], asks: list) -> list[Rating]:
        if not asks:
            return []
        questions = [q for _, _, _, q in asks]
        if self.method == "logprobs":
            digits = tuple(str(n) for n in range(1, self.config.scale + 1))
            scored = choice_logprobs(teacher, questions, [digits] * len(questions))
            return [expected_score(logprobs) for logprobs in scored]
        sampling = self.config.sampling
        if self.method == "json":
            sampling = replace(sampling, json_schema=score_schema(self.config.scale))
        params = [self.seeded(sampling, batch[i], k, aspect.name) for i, k, aspect, _ in asks]
        completions = teacher.generate(questions, params)
        return [self._read(samples[0]) for samples in completions]

    def _read(self, completion: Any) -> Rating:
        """A score from an answer: the JSON object's ``score`` (json), or the first number in range (text)."""
        detail = {"completion": completion}
        if self.method == "json":  # unreadable (cut at max_new_tokens): no score, never digits of its reasoning
            score, reasoning = parse_json_score(completion.text, self.config.scale)
            return Rating(None if score is None else float(score), "json", {**detail, "rationale": reasoning})
        return Rating(parse_text_score(completion.text, self.config.scale), "text", detail)

    def most_calls(self, records: int, candidates: int) -> dict[str, int]:
        answers = candidates if self.config.answers == "candidates" else 2  # the response and the rejected
        per_answer = len(self.aspects) * max(1, len(self.config.judges))
        return {f"rating · {self.aspects[0].name}": records * answers * per_answer}

    def preview(self, record: Record) -> list[tuple[str, Conversation]]:
        answer = PLACEHOLDER.format("candidate answer")
        return [(f"rating · {self.aspects[0].name}", self.question(record, self.aspects[0], answer))]


def expected_score(logprobs: list[float]) -> Rating:
    """The expected score under the probabilities of answering 1..N (normalised over those digits)."""
    top = max(logprobs)
    weights = [math.exp(lp - top) for lp in logprobs]
    total = sum(weights)
    probabilities = [w / total for w in weights]
    score = sum((n + 1) * p for n, p in enumerate(probabilities))
    return Rating(score, "logprobs", {"probabilities": {str(n + 1): p for n, p in enumerate(probabilities)}})


def score_schema(scale: int) -> dict[str, Any]:
    """The JSON Schema of a rating: the rater's reasoning, then an integer score from 1 to ``scale``."""
    return {
        "type": "object",
        "properties": {
            "reasoning": {"type": "string"},
            "score": {"type": "integer", "minimum": 1, "maximum": scale},
        },
        "required": ["reasoning", "score"],
        "additionalProperties": False,
    }


def parse_json_score(text: str, scale: int) -> tuple[int | None, str | None]:
    """(score, reasoning) of a JSON rating; (None, None) when it isn't one, or its score is out of range."""
    try:
        data = json.loads(text)
    except ValueError:
        return None, None
    score = data.get("score") if isinstance(data, dict) else None
    if isinstance(score, bool) or not isinstance(score, int) or not 1 <= score <= scale:
        return None, None
    reasoning = data.get("reasoning")
    return score, reasoning if isinstance(reasoning, str) else None


def parse_text_score(text: str, scale: int) -> float | None:
    """The first whole number from 1 to ``scale`` standing alone in ``text`` ("4", "Score: 4/5"); None if none."""
    for match in re.finditer(r"(?<![\d.])(\d+)(?![\d.]*\d)", text):
        value = int(match.group(1))
        if 1 <= value <= scale:
            return float(value)
    return None
