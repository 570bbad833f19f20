"""Respond: the teacher's first answer to each prompt."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from synthforge.records import Drop, Record, with_reasoning
from synthforge.stages.base import TRUNCATE, Stage, empty_answer, fit_context
from synthforge.teachers.base import TOKENS, Conversation, SamplingParams, Teacher
from synthforge.trace import RESPONSE_STEP, TRUNCATED_STEP


@dataclass
class RespondConfig:
    """Settings of the respond stage."""

    template: str = "respond"
    drop_truncated: bool = False
    truncate: str = "none"  # oldest: drop a conversation's oldest turns until it fits the teacher's context window
    sampling: SamplingParams = field(default_factory=lambda: SamplingParams(temperature=0.7, max_new_tokens=256))

    def __post_init__(self) -> None:
        if self.truncate not in TRUNCATE:
            raise ValueError(f"truncate must be one of {', '.join(TRUNCATE)}, got {self.truncate!r}")


class Respond(Stage):
    """Writes ``response``: the teacher's answer to the user turn rendered from ``template``."""

    kind = "respond"
    traces = (RESPONSE_STEP, TRUNCATED_STEP)
    Config = RespondConfig
    reads = ("prompt",)
    writes = ("response",)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.template = self.use_template("respond", self.config.template)
        if self.config.truncate == "oldest":
            self.needs = self.needs | {TOKENS}  # counting a conversation's tokens: the teacher's tokenizer

    def conversation(self, record: Record) -> Conversation:
        return self.answer_request(record, self.template)

    def process(self, batch: list[Record], teacher: Teacher | None) -> list[Record | Drop]:
        assert teacher is not None
        if self.config.truncate == "oldest":
            batch = [self._fit(r, teacher) for r in batch]
        params = [self.seeded(self.config.sampling, r) for r in batch]
        completions = teacher.generate([self.conversation(r) for r in batch], params)
        results: list[Record | Drop] = []
        for record, (completion, *_) in zip(batch, completions, strict=True):
            step = RESPONSE_STEP.answer(self.name, completion, writes=["response"])
            updated = replace(record, response=completion.text, steps=[*record.steps, step])
            updated = with_reasoning(updated, (completion.text, completion.reasoning))
            if not completion.text:
                results.append(self.drop(updated, empty_answer(completion)))
            elif self.config.drop_truncated and completion.finish_reason == "length":
                results.append(self.drop(updated, "truncated response (hit max_new_tokens)"))
            else:
                results.append(updated)
        return results

    def _fit(self, record: Record, teacher: Teacher) -> Record:
        """The record without the oldest turns that don't fit the context window (said in the trace)."""
        fitted, dropped = fit_context(record, teacher, self.config.sampling.max_new_tokens)
        if not dropped:
            return record
        step = TRUNCATED_STEP.make(self.name, dropped_turns=dropped, kept_turns=len(fitted.history))
        return replace(fitted, steps=[*fitted.steps, step])

    def most_calls(self, records: int, candidates: int) -> dict[str, int]:
        return {"response": records * self.config.sampling.n}

    def preview(self, record: Record) -> list[tuple[str, Conversation]]:
        return [("response", self.conversation(record))]
