"""Pipeline specs: YAML in ``pipelines/``, validated whole before any model is loaded."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from synthforge.builtin import moved
from synthforge.engine.costs import Price, price_table
from synthforge.engine.executor import EXECUTORS, executor_kind
from synthforge.errors import excerpt
from synthforge.files import read_text
from synthforge.records import RESERVED_FIELDS
from synthforge.resolve import resolve
from synthforge.settings import OMIT_IF_NONE, SpecError, build_config
from synthforge.stages import ENTRY_POINTS, STAGES, installed_stages, stage_class
from synthforge.teachers.config import TeacherSpec
from synthforge.teachers.factory import teacher_spec
from synthforge.teachers.team import DEFAULT


@dataclass
class SeedsSpec:
    """The seed prompts: a JSONL file (one object per line, prompt in ``field``) or a text file (one per line)."""

    path: str
    field: str = "prompt"
    harmful_field: str | None = "harmful"  # a boolean column marking harmful prompts (meta.harmful)
    system: str | None = None  # the system message of conversations that have none (a row's own wins)
    columns: list[str] = dataclasses.field(default_factory=list)  # other seed columns kept as fields (templates)

    def __post_init__(self) -> None:
        for name in self.columns:
            if not isinstance(name, str) or not name.isidentifier() or name in RESERVED_FIELDS:
                raise ValueError(f"columns: {name!r} is not a name a template can use (or is a built-in field)")


TABLE_FORMATS = ("jsonl", "parquet")


@dataclass
class TableSpec:
    """A dataset of any columns: ``fields`` of every kept record (record fields such as a ``generate`` stage's,
    or ``prompt``, ``response``, ``rejected``, ``system``, ``conversation``, ``turns``), written as
    ``table.jsonl`` or ``table.parquet`` with an ``id`` column first."""

    fields: list[str] = field(default_factory=list)
    format: str = "jsonl"

    def __post_init__(self) -> None:
        if not self.fields:
            raise ValueError("fields: list the columns of the table")
        if self.format not in TABLE_FORMATS:
            raise ValueError(f"format must be one of {', '.join(TABLE_FORMATS)}, got {self.format!r}")

    @property
    def file(self) -> str:
        return f"table.{self.format}"


@dataclass
class PushSpec:
    """Publish the finished run to the Hugging Face Hub once its export is written, as ``synthforge push`` does
    (the token from HF_TOKEN or ``hf auth login``, never written)."""

    repo_id: str  # the dataset repository, "owner/name" (created when missing)
    public: bool = False  # a new repository is private unless true; pushing to a public one needs true
    revision: str | None = None  # the branch to commit to (created from main when missing); null: main
    message: str | None = None  # the commit message; null: one naming the run

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*", self.repo_id):
            raise ValueError(f"repo_id must be owner/name, got {self.repo_id!r}")


@dataclass
class ExportSpec:
    """What the run writes besides the trace and manifest."""

    sft: bool = True
    dpo: bool = True
    license: str = "other"
    system: bool = True  # keep a conversation's system message in sft.jsonl / dpo.jsonl
    table: TableSpec | None = field(default=None, metadata={OMIT_IF_NONE: True})  # any columns (beside sft, dpo)
    reasoning: str = "strip"  # keep: answers in sft/dpo carry a reasoning teacher's thinking (reasoning_content)
    push: PushSpec | None = field(default=None, metadata={OMIT_IF_NONE: True})  # to the Hub once written

    def __post_init__(self) -> None:
        if self.reasoning not in ("strip", "keep"):
            raise ValueError(f"reasoning must be strip or keep, got {self.reasoning!r}")


@dataclass
class PathsSpec:
    """Where templates and constitutions are looked up, relative to the pipeline file."""

    prompts: str = "../prompts"
    constitutions: str = "../constitutions"


@dataclass
class EngineSpec:
    """How stages are executed: ``kind`` names an executor (``engine.executor.EXECUTORS``); ``chunk_size``:
    records per checkpointed unit (null: the teacher's batch size); ``options``: the executor's own settings
    (the other keys of ``engine:``, e.g. ray's ``replicas``), or None for its defaults."""

    kind: str = "local"
    chunk_size: int | None = None
    options: Any = None

    def __post_init__(self) -> None:
        if self.chunk_size is not None and self.chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {self.chunk_size}")


def engine_spec(value: Any, where: str) -> EngineSpec:
    """The ``engine:`` section (``engine: ray`` is short for ``engine: {kind: ray}``): ``kind`` and ``chunk_size``,
    then the chosen executor's settings; keys of another executor's settings are accepted and unused (so
    ``--engine local`` runs a pipeline written for Ray), any other key names itself."""
    data = {"kind": value} if isinstance(value, str) else value
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SpecError(f"{where}: expected a mapping of settings, got {type(data).__name__} {data!r}")
    kind = executor_kind(data.get("kind", "local"), where)
    common = {k: data[k] for k in ("kind", "chunk_size") if k in data}
    spec = build_config(EngineSpec, common, where)
    others = {f.name for name in EXECUTORS if (k := executor_kind(name).settings) for f in dataclasses.fields(k)}
    own = {f.name for f in dataclasses.fields(kind.settings)} if kind.settings else set()
    for key in data:
        if key not in common and key not in others:
            known = ", ".join(sorted({"kind", "chunk_size", *others}))
            raise SpecError(f"{where}.{key}: unknown setting (expected one of: {known})")
    if kind.settings is not None:
        spec.options = build_config(kind.settings, {k: v for k, v in data.items() if k in own}, where)
    return spec


@dataclass
class StageSpec:
    kind: str
    name: str
    settings: dict[str, Any]
    where: str


@dataclass
class PipelineSpec:
    """A validated pipeline; paths are resolved against the pipeline file's folder."""

    name: str
    source: Path
    seed: int
    teacher: TeacherSpec
    seeds: SeedsSpec | None
    stages: list[StageSpec]
    export: ExportSpec
    paths: PathsSpec
    engine: EngineSpec = field(default_factory=EngineSpec)
    description: str = ""
    raw: dict[str, Any] = field(default_factory=dict)
    teachers: dict[str, TeacherSpec] = field(default_factory=dict)  # named teachers (`teachers:`), besides default
    prices: dict[str, Price] = field(default_factory=dict)  # model -> its price (`prices:`), for the run's cost

    def teacher_spec_of(self, name: str) -> TeacherSpec:
        """The spec of the teacher called ``name`` (``default``: ``teacher:``)."""
        return self.teacher if name == DEFAULT else self.teachers[name]

    @property
    def base_dir(self) -> Path:
        return self.source.parent

    @property
    def prompts_dir(self) -> Path:
        return moved((self.base_dir / self.paths.prompts).resolve())

    @property
    def constitutions_dir(self) -> Path:
        return moved((self.base_dir / self.paths.constitutions).resolve())

    @property
    def seeds_path(self) -> Path | None:
        """The seed file, or None when the first stage generates the prompts itself (e.g. Magpie)."""
        return moved((self.base_dir / self.seeds.path).resolve()) if self.seeds else None


SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")  # becomes a directory or file name: no '/', no '..'
TOP_KEYS = (
    "name",
    "description",
    "seed",
    "teacher",
    "teachers",
    "prices",
    "engine",
    "seeds",
    "stages",
    "export",
    "paths",
)


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise SpecError(f"{path}: pipeline file not found")
    try:
        data = yaml.safe_load(read_text(path, "pipeline file"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise SpecError(f"{where}: invalid YAML: {getattr(exc, 'problem', None) or exc}") from None
    if not isinstance(data, dict):
        raise SpecError(f"{path}: not a pipeline file (a pipeline is a YAML mapping with keys {', '.join(TOP_KEYS)})")
    return data


def _stage_entries(data: dict[str, Any], source: Path) -> list[StageSpec]:
    entries = data.get("stages")
    if not isinstance(entries, list) or not entries:
        raise SpecError(f"{source}: stages: expected a non-empty list of stages")
    specs: list[StageSpec] = []
    for index, entry in enumerate(entries):
        where = f"{source}: stages[{index}]"
        if not isinstance(entry, dict) or len(entry) != 1:
            raise SpecError(f"{where}: expected a one-key mapping like '- respond: {{...}}'")
        kind, settings = next(iter(entry.items()))
        known = {**STAGES, **installed_stages()} if isinstance(kind, str) and ":" not in kind else STAGES
        if kind not in known and (not isinstance(kind, str) or ":" not in kind):
            raise SpecError(
                f"{where}: unknown stage {excerpt(kind)} (known: {', '.join(sorted(known))}; or your own as "
                f"module:Class, or installed in the {ENTRY_POINTS} entry-point group)"
            )
        if kind not in STAGES:
            _user_stage(known.get(kind, kind), where)
        if settings is not None and not isinstance(settings, dict):
            raise SpecError(
                f"{where}.{kind}: expected a mapping of settings, got {type(settings).__name__} {excerpt(settings)}"
            )
        settings = dict(settings or {})
        name = settings.pop("name", kind if ":" not in kind else stage_class(kind).kind)  # module:Class: its kind
        if not isinstance(name, str) or not SAFE_NAME.match(name):
            raise SpecError(f"{where}.name: {excerpt(name)} is not a valid stage name (letters, digits, '.', '_', '-')")
        for step_name, step_settings in stage_class(kind).expand(name, settings):
            if any(s.name == step_name for s in specs):
                raise SpecError(f"{where}: stage name {step_name!r} used twice (give one a 'name:')")
            specs.append(StageSpec(kind, step_name, step_settings, where=f"{source}: stages.{name}"))
    return specs


def _user_stage(ref: str, where: str) -> None:
    """A user's own stage, ``module:Class`` (an importable module): it must be a :class:`Stage` subclass."""
    from synthforge.stages.base import Stage

    found = resolve(ref, where, what="class")
    if not (isinstance(found, type) and issubclass(found, Stage)):
        raise SpecError(f"{where}: {ref!r} is not a stage (a subclass of synthforge.stages.base.Stage)")


def apply_override(data: dict[str, Any], assignment: str) -> None:
    """Apply ``a.b.c=value`` (value parsed as YAML); ``stages.NAME.key`` addresses a stage by name or kind."""
    if "=" not in assignment:
        raise SpecError(f"--set {assignment!r}: expected KEY=VALUE, e.g. stages.critique_revise.rounds=2")
    dotted, raw_value = assignment.split("=", 1)
    try:
        value = yaml.safe_load(raw_value)
    except yaml.YAMLError:
        value = raw_value
    keys = dotted.strip().split(".")
    node: Any = data
    for depth, key in enumerate(keys[:-1]):
        if isinstance(node, list):  # the stages list: find the entry by stage name or kind
            matches = [next(iter(e.values())) for e in node if isinstance(e, dict) and _entry_named(e, key)]
            if not matches:
                raise SpecError(f"--set {dotted}: no stage named {key!r}")
            if matches[0] is None:
                entry = next(e for e in node if _entry_named(e, key))
                entry[next(iter(entry))] = {}
                matches = [entry[next(iter(entry))]]
            node = matches[0]
            continue
        if not isinstance(node, dict):
            raise SpecError(f"--set {dotted}: {'.'.join(keys[:depth])} is not a mapping")
        node = node.setdefault(key, {})
    if not isinstance(node, dict):
        raise SpecError(f"--set {dotted}: {'.'.join(keys[:-1])} is not a mapping")
    node[keys[-1]] = value


def _entry_named(entry: dict[str, Any], name: str) -> bool:
    kind, settings = next(iter(entry.items()))
    return (settings or {}).get("name", kind) == name


def named_teachers(data: Any, where: str) -> dict[str, TeacherSpec]:
    """The ``teachers:`` mapping: a name for each teacher spec (the same keys as ``teacher:``)."""
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SpecError(f"{where}: expected a mapping of names to teacher settings, got {type(data).__name__}")
    named = {}
    for name, settings in data.items():
        if not isinstance(name, str) or not SAFE_NAME.match(name):
            raise SpecError(f"{where}: {excerpt(name)} is not a teacher name (letters, digits, '.', '_', '-')")
        if name == DEFAULT:
            raise SpecError(f"{where}.{name}: the name {DEFAULT!r} is the pipeline's teacher: (set that instead)")
        named[name] = teacher_spec(settings, f"{where}.{name}")
    return named


def load_pipeline(path: str | Path, overrides: tuple[str, ...] | list[str] = ()) -> PipelineSpec:
    """Read, override and validate a pipeline file; every error names the file and key path."""
    source = Path(path).resolve()
    data = _read_yaml(source)
    for assignment in overrides:
        apply_override(data, assignment)
    if not any(key in TOP_KEYS for key in data):  # some other YAML (or any text with a colon): never quoted
        raise SpecError(f"{source}: not a pipeline file (a pipeline is a YAML mapping with keys {', '.join(TOP_KEYS)})")
    for key in data:
        if key not in TOP_KEYS:
            raise SpecError(
                f"{source}: {excerpt(key, bare=True)}: unknown key (expected one of: {', '.join(TOP_KEYS)})"
            )
    seed = data.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise SpecError(f"{source}: seed: expected an integer, got {excerpt(seed)}")
    name = data.get("name", source.stem)
    if not isinstance(name, str) or not SAFE_NAME.match(name):
        raise SpecError(f"{source}: name: expected a name of letters, digits, '.', '_' and '-', got {excerpt(name)}")
    spec = PipelineSpec(
        name=name,
        source=source,
        seed=seed,
        teacher=teacher_spec(data.get("teacher"), f"{source}: teacher"),
        teachers=named_teachers(data.get("teachers"), f"{source}: teachers"),
        prices=price_table(data.get("prices"), f"{source}: prices"),
        seeds=build_config(SeedsSpec, data["seeds"], f"{source}: seeds") if data.get("seeds") is not None else None,
        stages=_stage_entries(data, source),
        export=build_config(ExportSpec, data.get("export"), f"{source}: export"),
        paths=build_config(PathsSpec, data.get("paths"), f"{source}: paths"),
        engine=engine_spec(data.get("engine"), f"{source}: engine"),
        description=str(data.get("description", "")),
        raw=data,
    )
    if spec.seeds_path is None and not (spec.stages and getattr(stage_class(spec.stages[0].kind), "generates", False)):
        raise SpecError(
            f"{source}: seeds: required unless the first stage writes its own prompts, e.g. magpie "
            "(seeds: {path: seeds/red-team.jsonl})"
        )
    if spec.seeds_path is not None and not spec.seeds_path.is_file():
        raise SpecError(f"{source}: seeds.path: file not found: {spec.seeds_path}")
    return spec
