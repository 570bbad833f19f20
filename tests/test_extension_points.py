"""The "where a change goes" table (docs/architecture.md), checked by doing: a throwaway backend, executor and
filter, each one new file (written here into a temporary package) plus one registry line, run a real pipeline."""

from __future__ import annotations

import json
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from synthforge.engine import executor as executors
from synthforge.engine.runner import RunOptions, run_pipeline
from synthforge.engine.spec import load_pipeline
from synthforge.hashing import file_sha256
from synthforge.settings import SpecError
from synthforge.stages import STAGES
from synthforge.teachers import factory
from tests.conftest import run_cli

BACKEND_FILE = """
from dataclasses import dataclass

from synthforge.teachers.base import GENERATE, Completion
from synthforge.teachers.config import Backend


@dataclass
class EchoSettings:
    prefix: str = ">>"


class EchoTeacher:
    capabilities = frozenset({GENERATE})

    def __init__(self, identity, prefix):
        self.identity, self.prefix = identity, prefix

    def generate(self, conversations, params):
        return [[Completion(f"{self.prefix} {c[-1]['content'][:20]}", "stop", 1, 1)] for c in conversations]


BACKEND = Backend(
    name="echo",
    settings=EchoSettings,
    identity=lambda spec, settings: {"backend": "echo", "model": spec.model, "prefix": settings.prefix},
    capabilities=lambda spec, settings: frozenset({GENERATE}),
    build=lambda spec, settings, identity: EchoTeacher(identity, settings.prefix),
    batch_size=3,
)
"""

EXECUTOR_FILE = '''
from dataclasses import dataclass

from synthforge.engine.executor import ExecutorKind, process_with_retries


@dataclass
class BackwardsSettings:
    note: str = ""


class BackwardsExecutor:
    """Runs the planned batches last first: the driver commits them as they come."""

    pipelines = False  # no submit: the engine runs it stage by stage
    batches_in_flight = None

    def __init__(self, note):
        self.note = note

    def describe(self):
        return {"kind": "backwards", "note": self.note}

    def workers(self):
        return 0

    def close(self):
        pass

    def run(self, stage, batches, teacher, retries):
        for number in reversed(range(len(batches))):
            yield number, process_with_retries(stage, batches[number], teacher, retries)


EXECUTOR = ExecutorKind(
    name="backwards",
    settings=BackwardsSettings,
    build=lambda settings, teacher_spec, teacher: BackwardsExecutor(settings.note),
    help="the batches last first",
)
'''

FILTER_FILE = """
from dataclasses import dataclass

from synthforge.stages.filters.base import FilterStage


@dataclass
class NoDigitsConfig:
    field: str = "prompt"


class NoDigits(FilterStage):
    kind = "filter_no_digits"
    Config = NoDigitsConfig

    def filter(self, record):
        text = getattr(record, self.config.field) or ""
        return (False, "has a digit") if any(ch.isdigit() for ch in text) else True
"""


@pytest.fixture
def plugins(tmp_path, monkeypatch) -> Iterator[Path]:
    """A temporary package holding the three new files, importable for the test's duration."""
    package = tmp_path / "plugins"
    package.mkdir()
    for name, text in (("echo_backend", BACKEND_FILE), ("backwards", EXECUTOR_FILE), ("no_digits", FILTER_FILE)):
        (package / f"{name}.py").write_text(textwrap.dedent(text))
    _forget_plugins()  # another test's copy may be imported already
    monkeypatch.syspath_prepend(str(tmp_path))
    yield package
    _forget_plugins()


def _forget_plugins() -> None:
    for name in [n for n in sys.modules if n == "plugins" or n.startswith("plugins.")]:
        del sys.modules[name]


def _pipeline(project: Path, teacher: str, stages: str, engine: str = "") -> Path:
    seeds = project / "pipelines" / "seeds" / "mixed.jsonl"
    prompts = ["Tell me a story.", "Count to 3.", "Name a river.", "Add 2 and 2.", "Say hello.", "Describe rain."]
    seeds.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))
    path = project / "pipelines" / "extension.yaml"
    path.write_text(
        f"name: ext\nseed: 1\nteacher: {teacher}\nseeds: {{path: seeds/mixed.jsonl}}\nstages:\n{stages}{engine}"
    )
    return path


def test_a_new_backend_is_one_file_and_one_registry_line(project, plugins, monkeypatch, tmp_path):
    monkeypatch.setitem(factory.BACKENDS, "echo", "plugins.echo_backend:BACKEND")
    path = _pipeline(project, "{backend: echo, model: e, echo: {prefix: '##'}}", "  - respond: {}\n")
    result = run_pipeline(load_pipeline(path), RunOptions(out_dir=tmp_path / "run"), log=lambda _: None)
    rows = [json.loads(x) for x in (tmp_path / "run" / "sft.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and all(r["messages"][1]["content"].startswith("## ") for r in rows)
    assert result.manifest["teacher"] == {"backend": "echo", "model": "e", "prefix": "##"}
    assert result.manifest["teacher_settings"]["echo"] == {"prefix": "##"}
    assert factory.teacher_overrides("echo:other")[:1] == ["teacher.backend=echo"]
    with pytest.raises(SpecError, match="teacher.echo.colour: unknown setting"):
        load_pipeline(_pipeline(project, "{backend: echo, model: e, echo: {colour: red}}", "  - respond: {}\n"))
    with pytest.raises(SpecError, match="backend must be one of transformers, openai, vllm, anthropic, echo"):
        load_pipeline(_pipeline(project, "{backend: nope, model: e}", "  - respond: {}\n"))


def test_a_new_executor_is_one_file_and_one_registry_line(project, plugins, monkeypatch, tmp_path, tiny_teacher):
    monkeypatch.setitem(executors.EXECUTORS, "backwards", "plugins.backwards:EXECUTOR")
    stages = "  - respond: {sampling: {max_new_tokens: 4}}\n"
    local = _pipeline(project, "{model: embedded, batch_size: 2}", stages)
    run_pipeline(load_pipeline(local), RunOptions(out_dir=tmp_path / "local"), tiny_teacher, log=lambda _: None)
    other = _pipeline(project, "{model: embedded, batch_size: 2}", stages, "engine: {kind: backwards, note: hi}\n")
    result = run_pipeline(load_pipeline(other), RunOptions(out_dir=tmp_path / "back"), tiny_teacher, log=lambda _: None)
    assert result.manifest["engine"] == {"kind": "backwards", "note": "hi"}
    for name in ("sft.jsonl", "trace.jsonl"):
        assert (tmp_path / "local" / name).read_text() == (tmp_path / "back" / name).read_text()


def test_a_new_filter_is_one_file_and_its_stages_line(project, plugins, monkeypatch, tmp_path):
    monkeypatch.setitem(STAGES, "filter_no_digits", "plugins.no_digits:NoDigits")
    path = _pipeline(project, "{model: embedded}", "  - filter_no_digits: {}\n")
    result = run_pipeline(load_pipeline(path), RunOptions(out_dir=tmp_path / "f"), log=lambda _: None)
    dropped = [json.loads(x) for x in (tmp_path / "f" / "dropped.jsonl").read_text().splitlines()]
    assert sorted(d["record"]["prompt"] for d in dropped) == ["Add 2 and 2.", "Count to 3."]
    assert {d["reason"] for d in dropped} == {"has a digit"} and result.manifest["counts"]["trace"] == 4


def test_a_users_own_stage_is_named_module_class_in_the_pipeline_with_no_registry_line(project, plugins, tmp_path):
    """The design card's other way to add a stage: the user's own module, named in the pipeline; it runs like a
    registered one (its fingerprint, checkpoints, manifest), and a bad reference is one line."""
    path = _pipeline(project, "{model: embedded}", "  - plugins.no_digits:NoDigits: {field: prompt}\n")
    result = run_pipeline(load_pipeline(path), RunOptions(out_dir=tmp_path / "u"), log=lambda _: None)
    assert result.manifest["counts"]["trace"] == 4 and "plugins.no_digits:NoDigits" not in STAGES
    again = run_pipeline(load_pipeline(path), RunOptions(out_dir=tmp_path / "u"), log=lambda _: None)
    assert again.reports[0].reused == 6
    for ref, message in (
        ("nowhere_at_all:Stage", "cannot import 'nowhere_at_all'"),
        ("plugins.no_digits:Missing", "has no class 'Missing'"),
        ("plugins.no_digits:NoDigitsConfig", "is not a stage"),
    ):
        with pytest.raises(SpecError, match=message):
            load_pipeline(_pipeline(project, "{model: embedded}", f"  - {ref}: {{}}\n"))


def test_a_users_stage_is_said_by_dry_run_and_the_manifest_and_its_source_is_in_the_cache_key(
    project, plugins, tmp_path, capsys
):
    """The only Python a pipeline runs that isn't synthforge's is listed before it runs (--dry-run) and kept in
    the manifest with its file's hash; editing that file recomputes the stage."""
    path = _pipeline(project, "{model: embedded}", "  - plugins.no_digits:NoDigits: {field: prompt}\n")
    code, out, err = run_cli(["generate", str(path), "--dry-run"], capsys)
    assert code == 0, err
    source = plugins / "no_digits.py"
    assert f"runs your Python: stage filter_no_digits: plugins.no_digits:NoDigits ({source})" in out
    first = run_pipeline(load_pipeline(path), RunOptions(out_dir=tmp_path / "u"), log=lambda _: None)
    (entry,) = first.manifest["stages"][0]["user_code"]
    assert entry["ref"] == "plugins.no_digits:NoDigits" and entry["sha256"] == file_sha256(source)
    assert str(tmp_path) not in entry["file"]  # no home directories in what may be published
    source.write_text(source.read_text() + "\n# edited\n")
    again = run_pipeline(load_pipeline(path), RunOptions(out_dir=tmp_path / "u"), log=lambda _: None)
    assert again.reports[0].reused == 0 and again.reports[0].computed == 6
    builtin = run_pipeline(
        load_pipeline(_pipeline(project, "{model: embedded}", "  - filter_empty: {fields: [prompt]}\n")),
        RunOptions(out_dir=tmp_path / "b"),
        log=lambda _: None,
    )
    assert "user_code" not in builtin.manifest["stages"][0]


def test_an_installed_package_adds_a_stage_by_entry_point(project, plugins, tmp_path, capsys):
    """A package that registers a stage in the ``synthforge.stages`` entry-point group (here a dist-info folder
    on sys.path, as pip leaves one) is named in a pipeline by its entry-point name and listed by `list`."""
    dist = tmp_path / "plugins_pkg-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: plugins-pkg\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[synthforge.stages]\nno_digits = plugins.no_digits:NoDigits\n")
    path = _pipeline(project, "{model: embedded}", "  - no_digits: {}\n")
    result = run_pipeline(load_pipeline(path), RunOptions(out_dir=tmp_path / "e"), log=lambda _: None)
    assert result.manifest["stages"][0]["name"] == "no_digits"
    assert result.manifest["stages"][0]["user_code"][0]["ref"] == "plugins.no_digits:NoDigits"
    assert result.manifest["counts"]["trace"] == 4
    code, out, _ = run_cli(["list"], capsys)
    assert code == 0 and "no_digits          (installed, yours: plugins.no_digits:NoDigits)" in out
    with pytest.raises(SpecError, match="or installed in the synthforge.stages entry-point group"):
        load_pipeline(_pipeline(project, "{model: embedded}", "  - no_such_stage: {}\n"))


def test_a_users_stage_that_another_machine_cannot_import_is_one_line():
    """An executor's worker (a Ray node) rebuilds each stage by importing its module: where the user's package
    isn't installed, that is a user error saying so, not an ImportError traceback."""
    from synthforge.builtin import ROOT
    from synthforge.errors import UserError
    from synthforge.stages.base import StageResources, rebuild_stage

    resources = StageResources(ROOT / "prompts", ROOT / "constitutions", 0)
    with pytest.raises(UserError, match="stages.shout: cannot import 'not_installed_here' here .*install its package"):
        rebuild_stage("not_installed_here", "Shout", "shout", {}, resources, "stages.shout")
