"""Validate a pipeline before anything runs: build every stage, render every prompt once, check the data flow
between stages and that each stage's teachers can do what it needs, so bad files and settings fail before a
model loads or a request is sent (``--dry-run`` shows the prompts this renders)."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from synthforge.engine.exporters import CONVERSATION_COLUMNS
from synthforge.engine.seeds import seed_records
from synthforge.engine.spec import PipelineSpec
from synthforge.records import RESERVED_FIELDS, Record
from synthforge.settings import SpecError
from synthforge.stages import stage_class
from synthforge.stages.base import PLACEHOLDER, Stage, StageResources, placeholder_record
from synthforge.teachers.base import SAMPLES, Conversation, SamplingParams, Teacher, backend_name, capabilities_of
from synthforge.teachers.factory import check_device, missing_capability, teacher_capabilities
from synthforge.teachers.team import DEFAULT


@dataclass
class PreparedRun:
    """A validated pipeline with its stages built and seed records read; no model loaded yet."""

    spec: PipelineSpec
    stages: list[Stage]
    records: list[Record]

    @property
    def needs_teacher(self) -> bool:
        return any(stage.uses_teacher for stage in self.stages)

    @property
    def teacher_names(self) -> list[str]:
        """The named teachers the stages call, in order of first use."""
        return list(dict.fromkeys(name for stage in self.stages for name in stage.teacher_names()))


def prepare(
    spec: PipelineSpec,
    limit: int | None = None,
    teacher: Teacher | None = None,
    teachers: Mapping[str, Teacher] | None = None,
) -> PreparedRun:
    """Build every stage and render every prompt once, and check that each stage's teachers can do what it
    needs, so bad files and settings fail before a model loads or a request is sent. ``teacher``: an object
    standing in for the default teacher; ``teachers``: for named ones."""
    given = {**(teachers or {}), **({DEFAULT: teacher} if teacher is not None else {})}
    records = (
        seed_records(
            spec.seeds_path,
            spec.seeds.field,
            limit,
            spec.seeds.harmful_field,
            spec.seeds.system,
            tuple(spec.seeds.columns),
        )
        if spec.seeds
        else []
    )

    def have(name: str) -> frozenset[str]:
        if name in given:
            return capabilities_of(given[name])
        return teacher_capabilities(spec.teacher_spec_of(name))

    stages = []
    for s in spec.stages:
        name = _teacher_named(s.settings, s.where, spec) if stage_class(s.kind).uses_teacher else DEFAULT
        jury = [n for n in s.settings.get("judges") or [] if isinstance(n, str) and n in spec.teachers]
        able = frozenset.intersection(*(have(n) for n in jury)) if jury else have(name)  # what every judge can do
        resources = StageResources(spec.prompts_dir, spec.constitutions_dir, spec.seed, spec.base_dir, able)
        stages.append(stage_class(s.kind)(s.name, s.settings, resources, where=s.where))
    for stage in stages:
        stage.preview(placeholder_record(records[0] if records else None))
    available = _check_data_flow(
        stages, has_seeds=spec.seeds is not None, columns=spec.seeds.columns if spec.seeds else []
    )
    if spec.export.table is not None:
        unknown = [f for f in spec.export.table.fields if f not in available and f not in CONVERSATION_COLUMNS]
        if unknown:
            raise SpecError(
                f"{spec.source}: export.table.fields: {unknown[0]!r} is written by no stage and no seed column "
                f"(available: {', '.join(sorted(available | set(CONVERSATION_COLUMNS)))})"
            )
    prepared = PreparedRun(spec=spec, stages=stages, records=records)
    for stage in stages:
        unknown = [n for n in stage.teacher_names() if n != DEFAULT and n not in spec.teachers]
        if unknown:
            named = ", ".join(sorted(spec.teachers)) or "none: add a teachers: mapping"
            raise SpecError(f"{stage.where}: no teacher named {unknown[0]!r} (named teachers: {named})")
    for name in prepared.teacher_names:
        _check_teacher(prepared, name, have(name), given.get(name))
    return prepared


def _teacher_named(settings: dict[str, Any], where: str, spec: PipelineSpec) -> str:
    """The teacher a stage's ``teacher:`` names (the default when unset); an unknown name is a spec error."""
    name = settings.get("teacher", DEFAULT)
    if isinstance(name, str) and name != DEFAULT and name not in spec.teachers:
        named = ", ".join(sorted(spec.teachers)) or "none: add a teachers: mapping"
        raise SpecError(f"{where}.teacher: no teacher named {name!r} (named teachers: {named})")
    return name if isinstance(name, str) else DEFAULT


def _check_teacher(prepared: PreparedRun, name: str, have: frozenset[str], given: Teacher | None) -> None:
    """Each stage calling teacher ``name`` needs only what it can do; its device exists on this machine."""
    spec = prepared.spec
    where = "teacher" if name == DEFAULT else f"teachers.{name}"
    if given is None:
        check_device(spec.teacher_spec_of(name), f"{spec.source}: {where}")
    backend = backend_name(given) if given is not None else spec.teacher_spec_of(name).backend
    for stage in prepared.stages:
        if name in stage.teacher_names():
            problem = missing_capability(backend, stage.needs, have)
            if problem:
                who = "" if name == DEFAULT else f" (teacher {name!r})"
                raise SpecError(f"{stage.where}: stage {stage.kind}{who} {problem}")


def teacher_needs(stages: list[Stage], name: str = DEFAULT) -> frozenset[str]:
    """What the stages that call teacher ``name`` will ask of it: their capabilities, and ``SAMPLES`` when one
    asks for several samples of a prompt (a server may ignore ``n``)."""
    needs: set[str] = set()
    for stage in stages:
        if name not in stage.teacher_names():
            continue
        needs |= stage.needs
        if any(isinstance(v, SamplingParams) and v.n > 1 for v in vars(stage.config).values()):
            needs.add(SAMPLES)
    return frozenset(needs)


def _check_data_flow(stages: list[Stage], has_seeds: bool, columns: list[str]) -> set[str]:
    """Each stage reads only fields that the seeds (``prompt``, ``seeds.columns``) or an earlier stage write;
    else a spec error naming the stage and the field. Returns the fields the last stage leaves."""
    available = {"prompt", *columns} if has_seeds else set()
    for stage in stages:
        missing = [f for f in stage.fields_read() if f not in available]
        if missing:
            writers = sorted({s.name for s in stages if missing[0] in s.fields_written()})
            hint = (
                f"written by: {', '.join(writers)}; put this stage after one of them"
                if writers
                else "no stage of this pipeline writes it; a seed column must be listed in seeds.columns"
            )
            raise SpecError(f"{stage.where}: reads {missing[0]!r}, which nothing before it writes ({hint})")
        _check_new_columns(stage, stages, columns, available)
        available.update(stage.fields_written())
    return available


def _check_new_columns(stage: Stage, stages: list[Stage], columns: list[str], available: set[str]) -> None:
    """A column a stage defines (beyond the record's own fields, which built-in stages rewrite by design) must be
    new: a second writer of a seed column or of an earlier stage's column would silently replace its values."""
    for name in stage.fields_written():
        if name in RESERVED_FIELDS or name not in available:
            continue
        earlier = [s.name for s in stages[: stages.index(stage)] if name in s.fields_written()]
        who = f"stage {earlier[0]!r}" if earlier else "the seeds (seeds.columns)"
        raise SpecError(f"{stage.where}: writes {name!r}, which {who} already writes; give this column another name")


@dataclass(frozen=True)
class StageCalls:
    """What the dry run's cost bound knows of one stage's teacher calls, by role of its prompts: how many answers at
    most, each prompt's mean size over the seeds rendered and its pieces of upstream model text (placeholders)."""

    stage: str
    teachers: tuple[str, ...]  # the named teachers it calls (none: it calls none)
    budget: int  # the most tokens one of its answers may take
    calls: dict[str, int]
    prompt_tokens: dict[str, float]  # mean over the seeds rendered
    placeholders: dict[str, int]


@dataclass
class Preview:
    """What ``--dry-run`` shows: the seeds, the output directory, and the first prompt of every stage (with
    placeholders where upstream model text would go); made without loading a model."""

    seeds: int
    out_dir: Path
    prompts: list[tuple[str, str, Conversation]]  # (stage, role, conversation)
    calls: list[StageCalls] = field(default_factory=list)  # every stage's teacher calls, for the cost bound (priced)
    user_code: list[tuple[str, str, Path | None]] = field(default_factory=list)  # (stage, module:name, source)


def preview(
    spec: PipelineSpec, limit: int | None = None, out_dir: Path | None = None, count: Counter | None = None
) -> Preview:
    """Validate everything and render the first prompt of every stage; no model is loaded. ``out_dir``: where the
    run would write (default: ``outputs/NAME``); ``count``: a prompt's tokens (default: 4 characters a token)."""
    prepared = prepare(spec, limit)
    record = placeholder_record(prepared.records[0] if prepared.records else None)
    prompts = [(stage.name, role, conv) for stage in prepared.stages for role, conv in stage.preview(record)]
    code = [(stage.name, ref, path) for stage in prepared.stages for ref, path in stage.user_code()]
    # the cost bound renders every stage's prompts for up to RENDERED seeds: only when there are prices to apply
    calls = stage_calls(prepared, count or estimated_tokens) if spec.prices else []
    return Preview(len(prepared.records), out_dir or default_out_dir(spec), prompts, calls, code)


RENDERED = 2000  # seeds whose prompts the cost bound renders (their mean stands for the rest)
CHARS_PER_TOKEN = 4.0  # the estimate without a tokenizer
Counter = Callable[[Conversation], float]  # a prompt's tokens


def estimated_tokens(conversation: Conversation) -> float:
    """A prompt's tokens estimated without a tokenizer: its messages' characters at 4 a token."""
    return sum(len(m["content"]) for m in conversation) / CHARS_PER_TOKEN


def stage_calls(prepared: PreparedRun, count: Counter = estimated_tokens) -> list[StageCalls]:
    """Each stage's teacher calls for the whole run at most, as the cost bound counts them: the records reaching it
    (filters only drop; generators say how many they make), the candidates they carry, the answers the stage
    declares (:meth:`~synthforge.stages.base.Stage.most_calls`), and its prompts rendered for the seeds and
    counted by ``count``."""
    seeds = [placeholder_record(r) for r in prepared.records[:RENDERED]] or [placeholder_record(None)]
    records, candidates, found = len(prepared.records), 2, []
    for stage in prepared.stages:
        shown = [(role, conv) for seed in seeds for role, conv in stage.preview(seed)]
        chars: dict[str, list[float]] = {}
        holes: dict[str, int] = {}
        for role, conv in shown:
            chars.setdefault(role, []).append(count(conv))
            holes[role] = max(holes.get(role, 0), sum(len(_UPSTREAM.findall(m["content"])) for m in conv))
        for role, more in stage.most_upstream_texts().items():
            holes[role] = holes.get(role, 0) + more
        calls = {role: records for role in chars} | stage.most_calls(records, candidates)
        mean = {role: sum(sizes) / len(sizes) for role, sizes in chars.items()}
        found.append(StageCalls(stage.name, stage.teacher_names(), _answer_budget(stage), calls, mean, holes))
        records, candidates = stage.records_out(records), stage.candidates_out(candidates)
    return found


_UPSTREAM = re.compile(re.escape(PLACEHOLDER).replace(re.escape("{}"), ".+?"))


def _answer_budget(stage: Stage) -> int:
    """The most tokens one of the stage's answers may take (its sampling settings' largest max_new_tokens)."""
    found = [v.max_new_tokens for v in vars(stage.config).values() if isinstance(v, SamplingParams)]
    return max(found, default=256)


def default_out_dir(spec: PipelineSpec) -> Path:
    return Path("outputs") / spec.name
