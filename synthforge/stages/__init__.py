"""Pipeline stages, one file each. ``STAGES`` maps a stage kind to ``module:Class`` (imported on use)."""

from __future__ import annotations

import importlib

STAGES: dict[str, str] = {
    "respond": "synthforge.stages.respond:Respond",
    "critique_revise": "synthforge.stages.critique_revise:CritiqueRevise",
    "judge": "synthforge.stages.judge:Judge",
}


def stage_class(kind: str) -> type:
    """The stage class registered for ``kind`` (KeyError if unknown)."""
    module, _, name = STAGES[kind].partition(":")
    return getattr(importlib.import_module(module), name)
