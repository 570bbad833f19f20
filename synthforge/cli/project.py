"""``synthforge init`` (a project folder with copies of what ships) and ``synthforge list`` (what ships)."""

from __future__ import annotations

import importlib
from pathlib import Path

import click

from synthforge import __version__
from synthforge.builtin import KINDS, builtin_path, copy_builtins, pipeline_names
from synthforge.constitution.parser import load_constitution
from synthforge.engine.executor import EXECUTORS, executor_kind
from synthforge.engine.spec import load_pipeline
from synthforge.files import claim_dir, discard_staging, journal_path_for, output_lock, publish, staging_dir, writing
from synthforge.stages import STAGES, installed_stages
from synthforge.teachers.factory import BACKENDS


@click.command()
@click.argument("directory", type=click.Path(path_type=Path))
def init(directory: Path) -> None:
    """Start a project in DIRECTORY (new or empty): copies of the built-in pipelines, prompts and
    constitutions to edit, and a README. Pipelines there run as they are:

    \b
      synthforge init my-project && cd my-project
      synthforge generate cai-harmless     # pipelines/cai-harmless.yaml of this folder
    """
    claim_dir(directory, lambda _: False, "DIRECTORY", "init")
    with output_lock(directory, "DIRECTORY", "init"):
        claim_dir(directory, lambda _: False, "DIRECTORY", "init")
        staging = staging_dir(directory)
        try:
            with writing(directory):
                written = copy_builtins(staging, directory.resolve().name, __version__)
                publish([(staging, directory)], journal_path_for(directory))
        finally:
            discard_staging(staging, directory)
    counts = {kind: sum(1 for p in written if p.parts[0] == kind) for kind in KINDS}
    click.echo(
        f"wrote {directory}/: {counts['pipelines']} pipeline files, {counts['prompts']} prompt templates, "
        f"{counts['constitutions']} constitution files, README.md"
    )
    click.echo(f"next: cd {directory} && synthforge generate cai-harmless --limit 8")


@click.command("list")
def list_builtins() -> None:
    """What ships with synthforge: pipelines (run one by name), constitutions, stages, teacher backends and
    executors."""
    click.echo("pipelines (synthforge generate NAME; synthforge init DIR copies them to edit):")
    for name in pipeline_names():
        spec = load_pipeline(builtin_path("pipelines", f"{name}.yaml"))
        click.echo(f"  {name:18s} {_first_sentence(spec.description)}")
    click.echo("constitutions (constitution: NAME in a stage):")
    for path in sorted(builtin_path("constitutions").glob("*.txt")):
        constitution = load_constitution(path)
        click.echo(f"  {path.stem:18s} {len(constitution.principles)} principles")
    click.echo("stages (one per entry of a pipeline's stages:):")
    for kind, target in STAGES.items():
        click.echo(f"  {kind:18s} {_doc_line(target)}")
    for kind, target in installed_stages().items():
        click.echo(f"  {kind:18s} (installed, yours: {target})")
    click.echo("teacher backends (teacher.backend):")
    for name, target in BACKENDS.items():
        click.echo(f"  {name:18s} {_doc_line(target.partition(':')[0] + ':')}")
    click.echo("executors (engine.kind, --engine):")
    for name in EXECUTORS:
        click.echo(f"  {name:18s} {executor_kind(name).help}")


def _first_sentence(text: str) -> str:
    text = " ".join(text.split())
    end = text.find(". ")
    return _short(text if end < 0 else text[: end + 1])


def _doc_line(target: str) -> str:
    """The first line of the docstring of ``module:attribute`` (its module's when it has none)."""
    module_name, _, attribute = target.partition(":")
    module = importlib.import_module(module_name)
    value = getattr(module, attribute) if attribute else module
    doc = value.__doc__ if value.__doc__ and value.__doc__ is not type(value).__doc__ else module.__doc__
    return _short(((doc or "").strip().splitlines() or [""])[0].replace("``", ""))


def _short(text: str, width: int = 100) -> str:
    return text if len(text) <= width else text[: width - 1].rstrip() + "…"
