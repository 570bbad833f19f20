"""What synthforge ships: ``pipelines/`` (with their seed files and held-out eval prompts), ``prompts/`` (Jinja2
templates) and ``constitutions/``. Their one copy is the checkout's top-level folders; a wheel carries them as
package data beside this file (mapped at build time, ``setup.py``). Found from any working directory;
``synthforge init`` copies them into a project to edit, and a pipeline's own files win over these."""

from __future__ import annotations

from pathlib import Path

from synthforge.errors import UserError

KINDS = ("pipelines", "prompts", "constitutions")
_PACKAGE = Path(__file__).resolve().parent
# installed from a wheel: beside this file; a checkout or an editable install: the repository's top-level folders
ROOT = _PACKAGE if (_PACKAGE / "pipelines").is_dir() else _PACKAGE.parents[1]
PIPELINE_SUFFIXES = (".yaml", ".yml")
LABEL = "synthforge:"  # how a built-in file is named in manifests and messages


def builtin_path(*parts: str) -> Path:
    """A shipped file or folder, e.g. ``builtin_path("pipelines", "eval-compare.yaml")``."""
    return ROOT.joinpath(*parts)


def moved(path: Path) -> Path:
    """``path``, or where it is now if it named a shipped file in a checkout's ``synthforge/builtin/`` (where the
    pipelines, prompts and constitutions lived before the top-level folders became their one copy)."""
    parts = path.parts
    for i in range(len(parts) - 2):
        if parts[i : i + 2] == ("synthforge", "builtin") and parts[i + 2] in KINDS and not path.exists():
            return ROOT.joinpath(*parts[i + 2 :])
    return path


def pipeline_names() -> list[str]:
    """Names of the built-in pipelines (``cai-harmless``, ``rlaif``, …), sorted."""
    return sorted(p.stem for p in builtin_path("pipelines").iterdir() if p.suffix in PIPELINE_SUFFIXES)


def find_pipeline(ref: str | Path, cwd: Path | None = None) -> Path:
    """The pipeline file ``ref`` names: a path that exists; for a bare name, ``NAME.yaml`` in the working
    directory or in its ``pipelines/`` (a local file wins over a built-in of the same name), else the built-in
    pipeline of that name; else a one-line error listing the built-ins."""
    cwd = cwd or Path.cwd()
    given = Path(ref).expanduser()
    local = given if given.is_absolute() else cwd / given
    if local.is_dir():
        raise UserError(f"{ref}: is a folder, not a pipeline file")
    if local.is_file():
        return local
    bare = given.parent == Path(".") and not given.suffix
    name = given.name
    if bare:
        for folder in (cwd, cwd / "pipelines"):
            for suffix in PIPELINE_SUFFIXES:
                if (folder / f"{name}{suffix}").is_file():
                    return folder / f"{name}{suffix}"
        if name in pipeline_names():
            return builtin_path("pipelines", f"{name}.yaml")
    if not bare:
        raise UserError(f"{ref}: pipeline file not found (built-in pipelines go by name alone, e.g. cai-harmless)")
    raise UserError(
        f"{ref}: no pipeline file of that name here, and no built-in pipeline called {name!r} "
        f"(built-ins: {', '.join(pipeline_names())}; `synthforge list` describes them)"
    )


def builtin_label(path: str | Path) -> str | None:
    """``synthforge:prompts/respond.j2`` for a shipped file, None for any other."""
    try:
        inside = Path(path).resolve().relative_to(ROOT)
    except ValueError:
        return None
    return LABEL + inside.as_posix() if inside.parts and inside.parts[0] in KINDS else None


PROJECT_README = """# {name}

A synthforge project: copies of the pipelines, prompt templates and constitutions synthforge ships
(synthforge {version}), made by `synthforge init`. Edit them; synthforge reads these files, not its own.

    synthforge generate cai-harmless          # runs pipelines/cai-harmless.yaml from this folder
    synthforge generate pipelines/rlaif.yaml  # any pipeline by its path
    synthforge constitution check constitutions/harmless.txt
    synthforge list                           # what ships: pipelines, constitutions, stages, backends

- `pipelines/`: one YAML file per pipeline; `seeds/` holds their seed prompts, `eval/` held-out prompts.
- `prompts/`: Jinja2 templates the stages render (`template: respond` names `prompts/respond.j2`).
- `constitutions/`: plain-text principles (see `constitutions/README.md` for the format).

A pipeline's `paths:` say where its prompts and constitutions are (here: `../prompts`, `../constitutions`);
a template or constitution missing there is taken from synthforge's built-ins. Run outputs go to
`outputs/<pipeline name>/`. A pipeline file names a built-in by its name only when no file of that name is
in this folder or in `pipelines/`.
"""


def copy_builtins(target: Path, name: str, version: str) -> list[Path]:
    """Copy the built-in pipelines, prompts and constitutions into ``target`` (a new folder) with a README for
    project ``name``; returns the files written, relative to ``target``."""
    import shutil

    target.mkdir(parents=True, exist_ok=True)
    for kind in KINDS:
        shutil.copytree(builtin_path(kind), target / kind, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    (target / "README.md").write_text(PROJECT_README.format(name=name, version=version), encoding="utf-8")
    return sorted(p.relative_to(target) for p in target.rglob("*") if p.is_file())
