"""Generate: a column the user defines — their own template over any record field, the teacher's answer written
to a named field; with ``json_schema``, a structured answer whose fields become record fields."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, replace
from typing import Any

from synthforge.records import RESERVED_FIELDS, Drop, Record
from synthforge.schemas import SchemaSpec, load_schema
from synthforge.settings import SpecError
from synthforge.stages.base import PLACEHOLDER, Stage
from synthforge.stages.helpers.metrics import Metrics
from synthforge.teachers.base import STRUCTURED, Conversation, SamplingParams, Teacher
from synthforge.teachers.grammar import grammar_problem
from synthforge.trace import FIELD_STEP, StepKind


@dataclass
class GenerateConfig:
    """Settings of a generation column."""

    template: str = ""  # a template name in prompts/ or a .j2 path; rendered with the record's fields
    field: str = ""  # the record field the answer goes to
    json_schema: Any = None  # a JSON Schema (inline mapping, or a .json/.yaml file): the answer is that object
    flatten: bool = True  # with a schema of an object: its properties become fields too (beside ``field``)
    constrained: bool = True  # decode under the schema's grammar where the teacher can (else parse and validate)
    retries: int = 2  # an answer that is not valid is asked again with a new seed, this many times
    in_conversation: bool = False  # send the conversation's earlier turns before the rendered request
    sampling: SamplingParams = dataclasses.field(
        default_factory=lambda: SamplingParams(temperature=0.7, max_new_tokens=256)
    )

    def __post_init__(self) -> None:
        if not self.template:
            raise ValueError("template is required (a file in prompts/, e.g. template: label)")
        if not self.field or not self.field.isidentifier():
            raise ValueError(f"field must be a name (letters, digits, _), got {self.field!r}")
        if self.field in RESERVED_FIELDS:
            raise ValueError(f"field {self.field!r} is a built-in field; choose another name")
        if self.retries < 0:
            raise ValueError("retries must be >= 0")


ALWAYS = frozenset({"prompt", "history", "conversation", "system", "turns", "fields"})  # every record has them


class Generate(Stage):
    """Writes ``field`` (and a schema's properties): the teacher's answer to the user's own template."""

    kind = "generate"
    traces = (FIELD_STEP,)
    Config = GenerateConfig
    reads = ()
    writes = ()
    metric_groups = {}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.template = self.use_template("generate", self.config.template)
        self.schema: SchemaSpec | None = None
        if self.config.json_schema is not None:
            where = f"{self.where}.json_schema"
            self.schema = load_schema(self.config.json_schema, self.resources.base_dir, where)
            if self.config.flatten:
                for name in self.schema.properties():
                    if name in RESERVED_FIELDS:
                        raise SpecError(
                            f"{where}: property {name!r} would replace the record's own {name!r} column; rename it "
                            "in the schema (or set flatten: false to keep the object in one field)"
                        )
            if self.config.constrained:
                problem = grammar_problem(self.schema.schema)
                if problem is not None:
                    raise SpecError(f"{where}: the grammar engine can't compile this schema: {problem}")
                self.needs = self.needs | {STRUCTURED}
        self.variables = sorted(self.template.variables)

    # -- the reads/writes contract with user columns --------------------------------------------------
    def fields_read(self) -> tuple[str, ...]:
        """The template's fields beyond the conversation (always there): earlier columns, ``response``…"""
        return tuple(v for v in self.variables if v not in ALWAYS)

    def traced(self) -> dict[str, StepKind]:
        """Its steps are named by the column it writes (``field``)."""
        return {self.config.field: FIELD_STEP}

    def fields_written(self) -> tuple[str, ...]:
        properties = self.schema.properties() if self.schema is not None and self.config.flatten else ()
        return (self.config.field, *[p for p in properties if p != self.config.field])

    def fingerprint(self) -> dict[str, Any]:
        return {**super().fingerprint(), "schema": self.schema.sha256 if self.schema else None}

    def files(self) -> dict[str, str]:
        found = super().files()
        if self.schema is not None and self.schema.path is not None:
            found[str(self.schema.path)] = self.schema.sha256
        return found

    # -- work -----------------------------------------------------------------------------------------
    def request(self, record: Record, values: dict[str, Any] | None = None) -> Conversation:
        """The rendered request (after the conversation's earlier turns when ``in_conversation``)."""
        context = {**self._context(record), **(values or {})}
        text = self.template.render(**context)
        earlier = list(record.history) if self.config.in_conversation else []
        return [*earlier, {"role": "user", "content": text}]

    def _context(self, record: Record) -> dict[str, Any]:
        return {
            **record.fields,
            "prompt": record.prompt,
            "history": record.history,
            "conversation": record.dialogue,
            "system": record.system,
            "turns": record.turns,
            "response": record.response,
            "rejected": record.rejected,
            "fields": record.fields,
        }

    def params(self, record: Record, attempt: int) -> SamplingParams:
        sampling = self.config.sampling
        if self.schema is not None and self.config.constrained:
            sampling = replace(sampling, json_schema=self.schema.schema)
        return self.seeded(sampling, record) if attempt == 0 else self.seeded(sampling, record, "retry", attempt)

    def process(self, batch: list[Record], teacher: Teacher | None) -> list[Record | Drop]:
        assert teacher is not None
        batch = list(batch)  # failed attempts go into copies: a batch the engine retries starts clean
        requests = [self.request(r) for r in batch]
        results: dict[int, Record | Drop] = {}
        pending = list(range(len(batch)))
        errors: dict[int, list[str]] = {i: [] for i in pending}
        for attempt in range(self.config.retries + 1):
            if not pending:
                break
            completions = teacher.generate(
                [requests[i] for i in pending], [self.params(batch[i], attempt) for i in pending]
            )
            still = []
            for i, (completion, *_) in zip(pending, completions, strict=True):
                value, problem = self._value(completion.text)
                step = FIELD_STEP.answer(
                    self.name, completion, role=self.config.field, writes=list(self.fields_written())
                )
                step["attempt"] = attempt
                if problem is not None:
                    errors[i].append(problem)
                    step["invalid"] = problem
                    batch[i] = replace(batch[i], steps=[*batch[i].steps, step])
                    still.append(i)
                    continue
                results[i] = replace(
                    batch[i], fields={**batch[i].fields, **self._fields(value)}, steps=[*batch[i].steps, step]
                )
            pending = still
        for i in pending:
            tries = self.config.retries + 1
            results[i] = self.drop(batch[i], f"no valid answer in {tries} attempt(s): {errors[i][-1]}")
        return [results[i] for i in range(len(batch))]

    def _value(self, text: str) -> tuple[Any, str | None]:
        """The answer's value (text, or the parsed object) and what is wrong with it (None: nothing)."""
        if self.schema is None:
            text = text.strip()
            return text, None if text else "empty answer"
        return self.schema.parse(text)

    def _fields(self, value: Any) -> dict[str, Any]:
        out = {self.config.field: value}
        if self.schema is not None and self.config.flatten and isinstance(value, dict):
            out.update({k: v for k, v in value.items() if k != self.config.field})
        return out

    # -- reports --------------------------------------------------------------------------------------
    def tally(self, step: dict[str, Any], metrics: Metrics) -> None:
        if step.get("stage") == self.name and "attempt" in step:
            metrics.count("answers")
            metrics.count("invalid", "invalid" in step)
            if step["attempt"] == 0:
                metrics.count("first_tries")
                metrics.count("valid_first_try", "invalid" not in step)

    def notes(self, summary: dict[str, Any]) -> list[str]:
        counters = summary.get("counters", {})
        first = counters.get("first_tries", 0)
        if not first or self.schema is None:
            return []
        rate = counters.get("valid_first_try", 0) / first
        then = f"invalid ones asked again up to {self.config.retries} time(s)" if self.config.retries else "no retries"
        return [f"{self.name}: {rate:.1%} of first answers were valid ({first} asked; {then})"]

    def most_calls(self, records: int, candidates: int) -> dict[str, int]:
        return {self.config.field: records * self.config.sampling.n * (1 + self.config.retries)}  # and its retries

    def preview(self, record: Record) -> list[tuple[str, Conversation]]:
        missing = {v: PLACEHOLDER.format(v) for v in self.variables if v not in self._context(record)}
        return [(self.config.field, self.request(record, missing))]
