"""The run manifest: what made a dataset (teacher, files and their hashes, seed, versions, counts)."""

from __future__ import annotations

import importlib.metadata
import platform
from pathlib import Path

from synthforge.hashing import file_sha256

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


def file_hashes(paths: dict[str, str], extra: list[Path]) -> dict[str, str]:
    """``paths`` (already hashed) plus sha256 of each file in ``extra``."""
    found = dict(paths)
    for path in extra:
        found[str(path)] = file_sha256(path)
    return dict(sorted(found.items()))
