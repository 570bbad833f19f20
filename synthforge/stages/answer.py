"""Answer: one model's answer to each prompt, for comparing models (``synthforge eval compare``).

The model is this stage's own (not the pipeline's teacher, which judges): any teacher reference (``embedded``, a
directory, a ``.gguf``, ``openai:MODEL@URL``, ``vllm:MODEL``), built through the teacher factory on first use, or
a named teacher of the pipeline (``teacher: NAME`` instead of ``model``). Its identity — known without loading
it — is part of the stage fingerprint, so answers are cached per model and a comparison resumes after a kill
like any run.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from synthforge.annotations import ANSWERS
from synthforge.records import Drop, Record
from synthforge.settings import SpecError
from synthforge.stages.base import Stage
from synthforge.teachers.base import Conversation, SamplingParams, Teacher
from synthforge.teachers.factory import LazyTeacher, spec_from_ref
from synthforge.trace import ANSWER_STEP


@dataclass
class AnswerConfig:
    """``model``: any teacher reference (embedded, a directory, a .gguf, openai:MODEL@URL, vllm:MODEL), or none
    with ``teacher: NAME`` (a named teacher of the pipeline); ``label``: its name in the results."""

    label: str
    model: str | None = None
    template: str = "respond"
    device: str | None = None
    batch_size: int = 16
    sampling: SamplingParams = field(default_factory=lambda: SamplingParams(temperature=0.0, max_new_tokens=256))


class Answer(Stage):
    """Reads ``prompt``; writes ``meta.answers[label]``."""

    kind = "answer"
    traces = (ANSWER_STEP,)
    annotates = (ANSWERS,)
    Config = AnswerConfig
    reads = ("prompt",)
    uses_teacher = False  # it brings its own model (model:), unless it names a teacher of the pipeline (teacher:)

    def __init__(self, name: str, settings: dict[str, Any] | None, *args, **kwargs):
        self.uses_teacher = "teacher" in (settings or {})
        super().__init__(name, settings, *args, **kwargs)
        if (self.config.model is not None) == self.uses_teacher:
            raise SpecError(f"{self.where}: give model (a teacher reference) or teacher (a named teacher), one of them")
        self.template = self.use_template("respond", self.config.template)
        self.model: Any = None
        if self.config.model is not None:
            common: dict[str, Any] = {"batch_size": self.config.batch_size}
            if self.config.device is not None:
                common["device"] = self.config.device
            self.model = LazyTeacher(spec_from_ref(self.config.model, **common))

    def fingerprint(self) -> dict[str, Any]:
        if self.model is None:
            return super().fingerprint()  # the named teacher's identity is the run's part of it
        return {**super().fingerprint(), "model": self.model.identity}

    def conversation(self, record: Record) -> Conversation:
        return self.answer_request(record, self.template)

    def process(self, batch: list[Record], teacher: Teacher | None) -> list[Record | Drop]:
        params = [self.seeded(self.config.sampling, r) for r in batch]
        model = self.model if self.model is not None else teacher
        assert model is not None
        completions = model.generate([self.conversation(r) for r in batch], params)
        results: list[Record | Drop] = []
        for record, (completion, *_) in zip(batch, completions, strict=True):
            step = ANSWER_STEP.answer(self.name, completion, model=self.config.label)
            answers = {**(ANSWERS.of(record) or {}), self.config.label: completion.text}
            results.append(ANSWERS.on(replace(record, steps=[*record.steps, step]), answers))
        return results

    def most_calls(self, records: int, candidates: int) -> dict[str, int]:
        return {f"answer ({self.config.label})": records * self.config.sampling.n}

    def preview(self, record: Record) -> list[tuple[str, Conversation]]:
        return [(f"answer ({self.config.label})", self.conversation(record))]
