"""Where the pipelines, prompts and constitutions synthforge ships are found, from any working directory."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent  # the checkout (package data once installed: see issue 27)


def builtin_path(*parts: str) -> Path:
    """A shipped file or folder, e.g. ``builtin_path("pipelines", "eval-compare.yaml")``."""
    return ROOT.joinpath(*parts)
