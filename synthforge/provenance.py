"""The run manifest: what made a dataset (teacher, files and their hashes, seed, versions, counts)."""

from __future__ import annotations

import importlib.metadata
import os
import platform
from pathlib import Path
from typing import Any

from synthforge.builtin import builtin_label
from synthforge.hashing import file_sha256

RUN_MARKER = ".synthforge-run"  # in every run directory: what synthforge wrote there is its own to rewrite


def unfinished_export(run_dir: Path) -> bool:
    """A run directory whose last export did not finish: marked as a run, but without its manifest (written last)."""
    return (run_dir / RUN_MARKER).is_file() and not (run_dir / "manifest.json").is_file()


VERSIONED = ("synthforge", "torch", "transformers", "datasets", "trl", "peft", "jinja2", "datasketch", "tokenizers")


def package_versions() -> dict[str, str]:
    """Installed versions of the packages that shape outputs, plus Python's."""
    versions = {"python": platform.python_version()}
    for name in VERSIONED:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def file_hashes(paths: dict[str, str], extra: list[Path], base: Path) -> dict[str, str]:
    """``paths`` (already hashed) plus sha256 of each file in ``extra``, keyed by public path (see below)."""
    found = {public_path(path, base): digest for path, digest in paths.items()}
    for path in extra:
        found[public_path(path, base)] = file_sha256(path)
    return dict(sorted(found.items()))


def public_path(path: str | Path, base: Path) -> str:
    """A path as it may be published (manifest, dataset card): ``synthforge:prompts/respond.j2`` for a file
    synthforge ships, else relative to ``base`` (the pipeline file's folder); a path outside it keeps only its
    last component, so no home directory or user name leaks."""
    path = Path(path).expanduser()
    if not path.is_absolute():
        return str(path)
    shipped = builtin_label(path)
    if shipped is not None:
        return shipped
    try:
        return os.path.relpath(path, base) if _inside(path, base.parent) else f".../{path.name}"
    except ValueError:  # another drive (Windows)
        return f".../{path.name}"


def _inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
    except ValueError:
        return False
    return True


def redact_paths(value: Any, base: Path) -> Any:
    """``value`` (JSON-like) with every absolute path string made public (see :func:`public_path`)."""
    if isinstance(value, dict):
        return {k: redact_paths(v, base) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_paths(v, base) for v in value]
    if isinstance(value, str) and (value.startswith(("/", "~/")) or (len(value) > 2 and value[1:3] == ":\\")):
        return public_path(value, base)
    return value
