"""Respond: the teacher's first answer to each prompt."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from synthforge.records import Drop, Record
from synthforge.stages.base import Stage, completion_step
from synthforge.teachers.base import Conversation, SamplingParams, Teacher


@dataclass
class RespondConfig:
    """Settings of the respond stage."""

    template: str = "respond"
    drop_truncated: bool = False
    sampling: SamplingParams = field(default_factory=lambda: SamplingParams(temperature=0.7, max_new_tokens=256))


class Respond(Stage):
    """Writes ``response``: the teacher's answer to the user turn rendered from ``template``."""

    kind = "respond"
    Config = RespondConfig
    reads = ("prompt",)
    writes = ("response",)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.template = self.use_template("respond", self.config.template)

    def conversation(self, record: Record) -> Conversation:
        return [{"role": "user", "content": self.template.render(prompt=record.prompt)}]

    def process(self, batch: list[Record], teacher: Teacher | None) -> list[Record | Drop]:
        assert teacher is not None
        params = [self.seeded(self.config.sampling, r) for r in batch]
        completions = teacher.generate([self.conversation(r) for r in batch], params)
        results: list[Record | Drop] = []
        for record, (completion, *_) in zip(batch, completions, strict=True):
            step = completion_step(self.name, "response", completion, writes=["response"])
            updated = replace(record, response=completion.text, steps=[*record.steps, step])
            if not completion.text:
                results.append(self.drop(updated, "empty response"))
            elif self.config.drop_truncated and completion.finish_reason == "length":
                results.append(self.drop(updated, "truncated response (hit max_new_tokens)"))
            else:
                results.append(updated)
        return results

    def preview(self, record: Record) -> list[tuple[str, Conversation]]:
        return [("response", self.conversation(record))]
