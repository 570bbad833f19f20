"""A pool of teachers answers each prompt (UltraFeedback's first step): every member, or ``per_record`` of them
drawn by weight (seeded per record). A member is a named teacher with its own sampling settings and system
prompt, so one loaded model can be several members (it is loaded once). The answers become the record's
``candidates`` (:class:`~synthforge.records.Candidate`), each saying its teacher and member, for ``rate`` and
``pair_by_score``. Each teacher's requests go out at once, side by side: a pool over two servers takes about
as long as the slower one, not both."""

from __future__ import annotations

import random
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields, replace
from typing import Any

from synthforge.records import Candidate, Drop, Record
from synthforge.stages.base import Stage
from synthforge.stages.helpers.metrics import GroupSpec, Metrics
from synthforge.teachers.base import Conversation, SamplingParams, Teacher
from synthforge.teachers.team import DEFAULT
from synthforge.trace import CANDIDATE_STEP


@dataclass
class MemberConfig:
    """One pool member: a named teacher, and how it is asked."""

    name: str  # the member's name in candidates and the trace
    teacher: str = DEFAULT  # a named teacher (`teachers:`), or the pipeline's teacher
    system: str | None = None  # a system prompt for this member (replaces the conversation's own, if any)
    sampling: dict[str, Any] | None = None  # sampling settings of its own, over the pool's (e.g. temperature: 1.0)
    weight: float = 1.0  # how often it is drawn, with per_record

    def __post_init__(self) -> None:
        if not self.weight > 0:
            raise ValueError(f"weight must be > 0, got {self.weight!r}")
        given = set(self.sampling or {})
        wrong = sorted(given - {f.name for f in fields(SamplingParams)}) or sorted(given & {"seed"})
        if wrong:
            raise ValueError(f"sampling.{wrong[0]}: not a sampling setting of a member (seeds derive from the run's)")

    def sampling_over(self, pool: SamplingParams) -> SamplingParams:
        """The pool's sampling settings with this member's own on top."""
        return replace(pool, **self.sampling) if self.sampling else pool


@dataclass
class PoolConfig:
    """Settings of the pool stage."""

    members: list[MemberConfig] = field(default_factory=list)  # at least two
    per_record: int = 0  # 0: every member answers each prompt; k: k members drawn by weight per record (seeded)
    template: str = "respond"  # how the user turn is asked (prompts/respond.j2)
    sampling: SamplingParams = field(default_factory=lambda: SamplingParams(temperature=0.7, max_new_tokens=256))

    def __post_init__(self) -> None:
        if len(self.members) < 2:
            raise ValueError("members: a pool needs at least two members")
        names = [m.name for m in self.members]
        if len(set(names)) != len(names):
            raise ValueError(f"members: names must be unique, got {names}")
        if not 0 <= self.per_record <= len(self.members) or self.per_record == 1:
            raise ValueError(f"per_record must be 0 (all) or from 2 to {len(self.members)}, got {self.per_record}")
        for member in self.members:
            member.sampling_over(self.sampling)  # a bad value (temperature: -1) is refused here, by its member


class Pool(Stage):
    """Reads ``prompt``; writes ``candidates``: one answer per drawn member."""

    kind = "pool"
    traces = (CANDIDATE_STEP,)
    Config = PoolConfig
    reads = ("prompt",)
    writes = ("candidates",)
    metric_groups = {
        "member": GroupSpec(
            counts=("answered",),
            rates={"truncated_rate": ("truncated", "answered")},
            labels={"answered": "answers", "truncated_rate": "hit max_new_tokens"},
        )
    }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.template = self.use_template("respond", self.config.template)

    def teacher_names(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(m.teacher for m in self.config.members))

    def tally(self, step: dict, metrics: Metrics) -> None:
        if CANDIDATE_STEP.is_(step):
            metrics.add("member", step["member"], answered=1, truncated=step.get("finish_reason") == "length")

    def drawn(self, record: Record) -> list[MemberConfig]:
        """The members that answer ``record``: all, or ``per_record`` drawn by weight without replacement."""
        members = list(self.config.members)
        if not self.config.per_record:
            return members
        rng = random.Random(self.seed_for(record, "members"))
        chosen: list[MemberConfig] = []
        while len(chosen) < self.config.per_record:
            left = [m for m in members if m not in chosen]
            chosen.append(rng.choices(left, weights=[m.weight for m in left])[0])
        return sorted(chosen, key=members.index)

    def request(self, record: Record, member: MemberConfig) -> Conversation:
        """The conversation a member answers: the record's, with the member's system prompt when it has one."""
        conversation = self.answer_request(record, self.template)
        if member.system is None:
            return conversation
        earlier = conversation[1:] if conversation[0]["role"] == "system" else conversation
        return [{"role": "system", "content": member.system}, *earlier]

    def run_batch(self, batch: list[Record], team: Mapping[str, Teacher]) -> list[Record | Drop]:
        asks = [(i, member) for i, record in enumerate(batch) for member in self.drawn(record)]
        by_teacher: dict[str, list[int]] = {}
        for n, (_, member) in enumerate(asks):
            by_teacher.setdefault(member.teacher, []).append(n)
        completions: list = [None] * len(asks)

        def ask(name: str) -> None:
            order = by_teacher[name]
            convs = [self.request(batch[asks[n][0]], asks[n][1]) for n in order]
            params = [self._sampling(batch[asks[n][0]], asks[n][1]) for n in order]
            for n, samples in zip(order, team[name].generate(convs, params), strict=True):
                completions[n] = samples[0]

        with ThreadPoolExecutor(max(1, len(by_teacher))) as threads:  # each teacher's window busy at once
            for done in [threads.submit(ask, name) for name in by_teacher]:
                done.result()  # a teacher error: the engine retries the batch
        answers: list[list] = [[] for _ in batch]
        for (i, member), completion in zip(asks, completions, strict=True):
            answers[i].append((member, completion))
        return [self._answered(record, answers[i]) for i, record in enumerate(batch)]

    def process(self, batch: list[Record], teacher: Teacher | None) -> list[Record | Drop]:
        """With one teacher standing in for every member's (tests, a pool of one model)."""
        assert teacher is not None
        return self.run_batch(batch, dict.fromkeys(self.teacher_names(), teacher))

    def _sampling(self, record: Record, member: MemberConfig) -> SamplingParams:
        return self.seeded(member.sampling_over(self.config.sampling), record, member.name)

    def _answered(self, record: Record, answers: list) -> Record | Drop:
        steps = list(record.steps)
        candidates = []
        for member, completion in answers:
            who = {"member": member.name, "teacher": member.teacher}
            steps.append(CANDIDATE_STEP.answer(self.name, completion, **who))
            if completion.text.strip():
                candidates.append(Candidate(completion.text, member.teacher, member.name, {}, completion.finish_reason))
        answered = replace(record, candidates=candidates, steps=steps)
        if len(candidates) < 2:
            return self.drop(answered, f"fewer than two non-empty answers ({len(candidates)} of {len(answers)})")
        return answered

    def most_calls(self, records: int, candidates: int) -> dict[str, int]:
        return {f"candidate · {self.config.members[0].name}": records * self.candidates_out(0)}

    def candidates_out(self, candidates: int) -> int:
        """Each record's answers: its members' (every one, or ``per_record``), each with its samples."""
        most_n = max((m.sampling or {}).get("n", self.config.sampling.n) for m in self.config.members)
        return (self.config.per_record or len(self.config.members)) * most_n

    def preview(self, record: Record) -> list[tuple[str, Conversation]]:
        member = self.config.members[0]
        return [(f"candidate · {member.name}", self.request(record, member))]
