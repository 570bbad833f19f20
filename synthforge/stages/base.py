"""The stage contract: a small block that maps a batch of records to one result per record.

The engine owns batching, checkpoints, retries and progress; a stage only says what it reads and
writes, what changes its output (its fingerprint), and how to process one batch.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, ClassVar, Protocol

from synthforge.annotations import Annotation
from synthforge.constitution import Constitution
from synthforge.constitution.parser import load_constitution
from synthforge.errors import UserError
from synthforge.hashing import derive_seed, file_sha256
from synthforge.prompts import PromptTemplate, load_template
from synthforge.records import Drop, Record
from synthforge.settings import SpecError, build_config, config_to_dict
from synthforge.stages.helpers.metrics import GroupSpec, Metrics
from synthforge.teachers.base import (
    STRUCTURED,
    THINKING_BUDGET,
    Completion,
    Conversation,
    SamplingParams,
    Teacher,
    window_of,
)
from synthforge.teachers.team import DEFAULT
from synthforge.trace import StepKind

PLACEHOLDER = "<<{} from upstream>>"


@dataclass(frozen=True, slots=True)
class StageResources:
    """Where a stage finds the files it reads (``base_dir``: the pipeline file's folder), and the seed."""

    prompts_dir: Path
    constitutions_dir: Path
    seed: int
    base_dir: Path | None = None
    capabilities: frozenset[str] | None = None  # the teacher's, when known: `structured: auto` asks for JSON


class Stage(ABC):
    """Base class of every pipeline stage; subclasses set ``kind``, ``Config``, ``reads``, ``writes``."""

    json_answers: bool | None = None  # a stage that parses its teacher's answers: as JSON of a schema, or as text

    kind: ClassVar[str]
    Config: ClassVar[type]
    reads: ClassVar[tuple[str, ...]] = ()
    writes: ClassVar[tuple[str, ...]] = ()
    uses_teacher: ClassVar[bool] = True
    needs: ClassVar[frozenset[str]] = frozenset()  # teacher capabilities beyond generating (teachers.base)
    whole_dataset: ClassVar[bool] = False  # sees every record at once (process_all), cached as a whole
    metric_groups: ClassVar[dict[str, GroupSpec]] = {}  # how the per-group statistics of ``tally`` are shown
    generates: ClassVar[bool] = False  # writes a new set of prompts (may open a pipeline without seeds)
    tags: ClassVar[tuple[str, ...]] = ()  # what kind of data it makes, for the dataset card's tags
    annotates: ClassVar[tuple[Annotation, ...]] = ()  # the typed annotations it leaves on records (annotations.py)
    traces: ClassVar[tuple[StepKind, ...]] = ()  # the kinds of trace step it writes (trace.py)
    # config keys that change how a run reacts, never a record's result: left out of the fingerprint
    reaction_keys: ClassVar[frozenset[str]] = frozenset({"on_unreliable", "judge_report"})

    def __init__(self, name: str, settings: dict[str, Any] | None, resources: StageResources, where: str = ""):
        self.name = name
        self.settings = dict(settings or {})  # the plain data it was built from (see __reduce__)
        self.where = where or f"stages.{name}"
        own = dict(self.settings)
        self.teacher_name = own.pop("teacher", DEFAULT) if self.uses_teacher else DEFAULT  # `teacher: NAME`
        if not isinstance(self.teacher_name, str):
            raise SpecError(f"{self.where}.teacher: expected the name of a teacher, got {self.teacher_name!r}")
        self.config = build_config(self.Config, own, self.where)
        self.resources = resources
        self.templates: dict[str, PromptTemplate] = {}
        self.constitution: Constitution | None = None
        if any(p.max_reasoning_tokens is not None for p in _sampling_of(self.config)):
            self.needs = type(self).needs | {THINKING_BUDGET}

    @classmethod
    def expand(cls, name: str, settings: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        """The stages one ``stages:`` entry stands for, as (name, settings); one, itself, by default (a stage that
        works in steps checkpointed apart, e.g. one turn of a dialogue each, returns one per step)."""
        return [(name, settings)]

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled as the plain data it was built from, and rebuilt from it (in another process: an executor's
        worker): files are re-read and user modules re-imported there, never sent as live objects."""
        return (
            rebuild_stage,
            (type(self).__module__, type(self).__qualname__, self.name, self.settings, self.resources, self.where),
        )

    # -- helpers for subclasses -------------------------------------------------------------
    def use_template(self, role: str, ref: str) -> PromptTemplate:
        """Load template ``ref`` for ``role`` (it becomes part of the fingerprint)."""
        template = load_template(ref, self.resources.prompts_dir)
        self.templates[role] = template
        return template

    def use_constitution(self, ref: str) -> Constitution:
        """Load constitution ``ref`` (its hash becomes part of the fingerprint)."""
        self.constitution = load_constitution(ref, self.resources.constitutions_dir)
        return self.constitution

    def seed_for(self, record: Record, *parts: Any) -> int:
        """Deterministic per-record seed: pipeline seed, stage name, record id and ``parts``."""
        return derive_seed(self.resources.seed, self.name, record.id, *parts)

    def answers_in_json(self, mode: str) -> bool:
        """Whether to ask for answers as JSON of a schema (decoding constrained to it) instead of free text to
        parse: ``json``, ``text``, or ``auto`` — JSON when the teacher can constrain its output. The choice is
        part of the fingerprint."""
        if mode not in STRUCTURED_MODES:
            raise SpecError(f"{self.where}.structured: must be one of {', '.join(STRUCTURED_MODES)}, got {mode!r}")
        if mode == "json":
            self.needs = self.needs | {STRUCTURED}
        self.json_answers = mode == "json" or (mode == "auto" and STRUCTURED in (self.resources.capabilities or ()))
        return self.json_answers

    def stage_seed(self, *parts: Any) -> int:
        """Deterministic seed for work not tied to one record (pipeline seed, stage name, ``parts``)."""
        return derive_seed(self.resources.seed, self.name, *parts)

    def seeded(self, params: SamplingParams, record: Record, *parts: Any) -> SamplingParams:
        return params.with_seed(self.seed_for(record, *parts))

    @staticmethod
    def answer_request(record: Record, template: PromptTemplate) -> Conversation:
        """What asks for an answer to ``record``'s last user turn: the conversation's earlier turns as they are,
        then that turn rendered by ``template`` (with ``prompt``, ``history`` and ``conversation``)."""
        request = template.render(prompt=record.prompt, history=record.history, conversation=record.dialogue)
        return [*record.history, {"role": "user", "content": request}]

    # -- the contract -----------------------------------------------------------------------
    def fingerprint(self) -> dict[str, Any]:
        """Everything that changes this stage's output for a given input record."""
        return {
            "kind": self.kind,
            "name": self.name,
            "config": {k: v for k, v in config_to_dict(self.config).items() if k not in self.reaction_keys},
            "seed": self.resources.seed,
            "templates": {role: t.sha256 for role, t in sorted(self.templates.items())},
            "constitution": self.constitution.sha256 if self.constitution else None,
            **({"json_answers": self.json_answers} if self.json_answers is not None else {}),
            **({"code": [file_sha256(p) for _, p in code if p]} if (code := self.own_class_code()) else {}),
        }

    def teacher_names(self) -> tuple[str, ...]:
        """The named teachers this stage calls (``teacher: NAME``, else the default); none when it calls none."""
        return (self.teacher_name,) if self.uses_teacher else ()

    def run_batch(self, batch: list[Record], team: Mapping[str, Teacher]) -> list[Record | Drop]:
        """What executors call: :meth:`process` with this stage's own teacher; each new trace step of this stage
        says which named teacher it called (``teacher``). A stage that calls several (a pool, a jury) overrides
        this and says so itself."""
        if not self.uses_teacher:
            return self.process(batch, None)
        return [self.stamped(r, self.teacher_name) for r in self.process(batch, team[self.teacher_name])]

    def stamped(self, result: Record | Drop, teacher: str) -> Record | Drop:
        """``result`` with ``teacher: NAME`` on this stage's steps that don't name one yet."""
        record = result.record if isinstance(result, Drop) else result
        steps = [
            {**s, "teacher": teacher} if s.get("stage") == self.name and "teacher" not in s else s for s in record.steps
        ]
        if steps == record.steps:
            return result
        record = replace(record, steps=steps)
        return replace(result, record=record) if isinstance(result, Drop) else record

    def tally(self, step: dict[str, Any], metrics: Metrics) -> None:  # noqa: B027 - optional hook
        """Count what this stage reports about one of its own trace steps (see ``metric_groups``)."""

    def notes(self, summary: dict[str, Any]) -> list[str]:
        """What a reader of this stage's results must not miss, from its metrics ``summary`` (log, card, report)."""
        return []

    def provenance(self) -> dict[str, Any]:
        """What else the manifest records of how this stage's results were made (e.g. its judge's measured
        report); nothing by default."""
        return {}

    def halt(self, summary: dict[str, Any]) -> str | None:
        """Why the run must stop now, from the metrics ``summary`` of the results this run computed so far (e.g. a
        judge found unreliable with ``on_unreliable: stop``); None to go on. Finished work stays checkpointed."""
        return None

    def traced(self) -> dict[str, StepKind]:
        """The trace steps this stage writes, by role (a kind whose role its settings choose says so here)."""
        return {k.role: k for k in self.traces if k.role is not None}

    def fields_read(self) -> tuple[str, ...]:
        """The record fields this stage reads, as configured (checked against what earlier stages write)."""
        return self.reads

    def fields_written(self) -> tuple[str, ...]:
        """The record fields this stage writes, as configured (a user-defined column names its own)."""
        return self.writes

    def files(self) -> dict[str, str]:
        """Files this stage reads, path → sha256 (for the manifest)."""
        found = {str(t.path): t.sha256 for t in self.templates.values()}
        if self.constitution and self.constitution.path:
            found[str(self.constitution.path)] = self.constitution.sha256
        found.update({str(p): file_sha256(p) for _, p in self.user_code() if p})
        return found

    def own_class_code(self) -> list[tuple[str, Path | None]]:
        """This stage's class, as (``module:Class``, its source file), when it is the user's own (named in a
        pipeline as ``module:Class`` or by an entry point); empty for synthforge's stages. Its file's hash is in
        the cache key: editing the stage recomputes it."""
        cls = type(self)
        if cls.__module__.partition(".")[0] == "synthforge":
            return []
        source = inspect.getsourcefile(cls)
        return [(f"{cls.__module__}:{cls.__qualname__}", Path(source) if source else None)]

    def user_code(self) -> list[tuple[str, Path | None]]:
        """All the user's own Python this stage runs, as (reference, source file): its class when it is the
        user's (a filter adds the function it calls). ``--dry-run`` lists it and the manifest records it."""
        return self.own_class_code()

    @abstractmethod
    def process(self, batch: list[Record], teacher: Teacher | None) -> list[Record | Drop]:
        """Return one result per input record, in order: the updated record, or a :class:`Drop`."""

    def preview(self, record: Record) -> list[tuple[str, Conversation]]:
        """The prompts this stage would send for ``record`` (``--dry-run``); may raise UserError."""
        return []

    # What the dry run's cost bound asks of a stage (each answer may take the stage's whole max_new_tokens).
    def most_calls(self, records: int, candidates: int) -> dict[str, int]:
        """The most answers ``records`` input records may cost, by role of :meth:`preview` (a call asking n samples
        counts n); ``candidates``: the most candidates a record carries here. A role not given: one per record."""
        return {}

    def most_upstream_texts(self) -> dict[str, int]:
        """Pieces of model text a call of each role may carry beyond those its preview shows (a dialogue's later
        turns carry the earlier ones); each counts as an answer at the largest max_new_tokens so far."""
        return {}

    def records_out(self, records: int) -> int:
        """The most records this stage hands on for ``records`` in (the same by default: filters only drop)."""
        return records

    def candidates_out(self, candidates: int) -> int:
        """The most candidates a record carries after this stage (as many as it came with, by default)."""
        return candidates

    def drop(self, record: Record, reason: str) -> Drop:
        return Drop(record=record, stage=self.name, reason=reason)


class Journal(Protocol):
    """Durable key → JSON value store the engine gives a whole-dataset stage (see engine.checkpoint)."""

    def get(self, key: str) -> Any: ...

    def put(self, key: str, value: Any) -> None: ...


class DatasetStage(Stage):
    """A stage that needs every record at once (dedup, pool growing); the engine calls :meth:`process_all`.

    Its results may differ in number from its inputs; they are cached as a whole under the stage's
    fingerprint plus the hash of all input records. ``generates``: it writes new prompts itself, so it
    may open a pipeline that has no seed file.
    """

    whole_dataset: ClassVar[bool] = True

    def progress_total(self, records: list[Record]) -> int:
        """What the progress bar counts to (input records by default)."""
        return len(records)

    def distributed(self, workers: int) -> DatasetStage:
        """This stage set to use ``workers`` workers of the run's executor, if it has a distributed form
        (the same results and fingerprint); itself by default."""
        return self

    @abstractmethod
    def process_all(
        self,
        records: list[Record],
        teacher: Teacher | None,
        progress: Callable[[int], None],
        journal: Journal | None = None,
    ) -> list[Record | Drop]:
        """All results for ``records``; call ``progress(n)`` as work finishes. Expensive intermediate
        work (teacher calls) goes through ``journal`` so a killed run resumes without repeating it."""

    def process(self, batch: list[Record], teacher: Teacher | None) -> list[Record | Drop]:
        return self.process_all(batch, teacher, lambda _: None)

    def run_all(
        self,
        records: list[Record],
        team: Mapping[str, Teacher],
        progress: Callable[[int], None],
        journal: Journal | None = None,
    ) -> list[Record | Drop]:
        """What executors call: :meth:`process_all` with this stage's own teacher, its steps stamped with its name."""
        if not self.uses_teacher:
            return self.process_all(records, None, progress, journal)
        results = self.process_all(records, team[self.teacher_name], progress, journal)
        return [self.stamped(r, self.teacher_name) for r in results]

    @staticmethod
    def remember_completions(
        journal: Journal | None, key: str, ask: Callable[[], list[list[Completion]]]
    ) -> list[Completion]:
        """The first sample of each completion ``ask()`` returns, from ``journal`` when an earlier (killed)
        run saved them under ``key``; otherwise asked now and saved."""
        saved = journal.get(key) if journal is not None else None
        if saved is None:
            saved = [asdict(samples[0]) for samples in ask()]
            if journal is not None:
                journal.put(key, saved)
        return [Completion(**c) for c in saved]


def rebuild_stage(
    module: str, qualname: str, name: str, settings: dict[str, Any], resources: StageResources, where: str
) -> Stage:
    """A stage built again from plain data (the inverse of ``Stage.__reduce__``); a user's stage whose module
    can't be imported here (another machine: a Ray node) is one line."""
    try:
        found = importlib.import_module(module)
    except ImportError as exc:
        raise UserError(
            f"{where}: cannot import {module!r} here ({exc}): a stage of your own must be importable on every "
            "machine that runs it (install its package there)"
        ) from None
    cls = found
    for part in qualname.split("."):
        cls = getattr(cls, part)
    return cls(name, settings, resources, where=where)


def placeholder_record(seed: Record | None = None) -> Record:
    """A record whose model-written fields are placeholders (its conversation: ``seed``'s, if given), used to
    render prompts without a model."""
    prompt = seed.prompt if seed is not None else PLACEHOLDER.format("prompt")
    history = seed.history if seed is not None else []
    fields = dict(seed.fields) if seed is not None else {}
    return Record(id="preview", prompt=prompt, response=PLACEHOLDER.format("response"), history=history, fields=fields)


TRUNCATE = ("none", "oldest")


def fit_context(record: Record, teacher: Any, reserve: int) -> tuple[Record, int]:
    """``record`` without the oldest turns of its conversation (after the system message, a user and an
    assistant turn at a time) until it fits the teacher's context window with ``reserve`` tokens to spare; the
    system message and the last user turn are never dropped. Returns it and how many turns were dropped."""
    limit = window_of(teacher)
    if not limit:
        return record, 0
    system = record.history[:1] if record.system is not None else []
    earlier = record.history[len(system) :]
    dropped = 0
    while earlier and teacher.count_tokens([*system, *earlier, *record.dialogue[-1:]]) + reserve > limit:
        cut = 2 if len(earlier) > 1 and earlier[1]["role"] == "assistant" else 1
        earlier, dropped = earlier[cut:], dropped + cut
    return (replace(record, history=[*system, *earlier]), dropped) if dropped else (record, 0)


STRUCTURED_MODES = ("auto", "json", "text")


def _sampling_of(config: Any) -> list[SamplingParams]:
    """The sampling settings a stage's config holds (``sampling``, ``user_sampling``, ``cot_sampling``, ...)."""
    if not dataclasses.is_dataclass(config):
        return []
    values = [getattr(config, f.name) for f in dataclasses.fields(config)]
    return [v for v in values if isinstance(v, SamplingParams)]


def empty_answer(completion: Any) -> str:
    """Why an answer is empty: nothing was written, or a reasoning teacher thought until its tokens ran out."""
    if getattr(completion, "reasoning", None):
        return "no answer after thinking (raise max_new_tokens, or end thinking with max_reasoning_tokens)"
    return "empty response"
