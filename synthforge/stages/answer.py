"""Answer: one model's answer to each prompt, for comparing models (``synthforge eval compare``).

The model is this stage's own (not the pipeline's teacher, which judges): it is built through the teacher
factory on first use, and its identity — known without loading it — is part of the stage fingerprint, so
answers are cached per model and a comparison resumes after a kill like any run.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from synthforge.records import Drop, Record
from synthforge.stages.base import Stage, completion_step
from synthforge.teachers.base import Conversation, SamplingParams, Teacher
from synthforge.teachers.config import TeacherSpec
from synthforge.teachers.factory import LazyTeacher


@dataclass
class AnswerConfig:
    """``model``: any teacher reference (embedded, a directory, a .gguf); ``label``: its name in the results."""

    model: str
    label: str
    template: str = "respond"
    device: str | None = None
    batch_size: int = 16
    sampling: SamplingParams = field(default_factory=lambda: SamplingParams(temperature=0.0, max_new_tokens=256))


class Answer(Stage):
    """Reads ``prompt``; writes ``meta.answers[label]``."""

    kind = "answer"
    Config = AnswerConfig
    reads = ("prompt",)
    uses_teacher = False  # it brings its own model

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.template = self.use_template("respond", self.config.template)
        spec = TeacherSpec(model=self.config.model, batch_size=self.config.batch_size, device=self.config.device)
        self.model = LazyTeacher(spec)

    def fingerprint(self) -> dict[str, Any]:
        return {**super().fingerprint(), "model": self.model.identity}

    def conversation(self, record: Record) -> Conversation:
        return self.answer_request(record, self.template)

    def process(self, batch: list[Record], teacher: Teacher | None) -> list[Record | Drop]:
        params = [self.seeded(self.config.sampling, r) for r in batch]
        completions = self.model.generate([self.conversation(r) for r in batch], params)
        results: list[Record | Drop] = []
        for record, (completion, *_) in zip(batch, completions, strict=True):
            step = completion_step(self.name, "answer", completion, model=self.config.label)
            answers = {**record.meta.get("answers", {}), self.config.label: completion.text}
            results.append(replace(record, steps=[*record.steps, step], meta={**record.meta, "answers": answers}))
        return results

    def preview(self, record: Record) -> list[tuple[str, Conversation]]:
        return [(f"answer ({self.config.label})", self.conversation(record))]
