"""Layers lean only downwards (see the README's layout): checked on every import statement of the package."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "synthforge"
BACKENDS = ("synthforge.teachers.backends",)


def _imports() -> dict[str, set[str]]:
    """Module path (relative to the package, e.g. 'stages/respond.py') → every synthforge module it imports."""
    found: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
            elif isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
        found[str(path.relative_to(PACKAGE))] = {n for n in names if n.startswith("synthforge")}
    return found


def _layer(module: str) -> str:
    return module.split("/")[0] if "/" in module else "core"


def test_layers_only_lean_downwards():
    forbidden = {
        "stages": ("synthforge.engine", "synthforge.cli"),
        "teachers": ("synthforge.engine", "synthforge.cli", "synthforge.stages"),
        "dedup": ("synthforge.engine", "synthforge.cli", "synthforge.stages"),
        "constitution": ("synthforge.engine", "synthforge.cli", "synthforge.stages"),
        "train": ("synthforge.engine", "synthforge.cli", "synthforge.stages"),
        "report": ("synthforge.engine", "synthforge.cli", "synthforge.stages", "synthforge.teachers"),
        "core": ("synthforge.engine", "synthforge.cli", "synthforge.stages", "synthforge.teachers"),
    }
    broken = [
        f"{module} imports {name}"
        for module, names in _imports().items()
        for name in names
        if module != "testing.py" and name.startswith(forbidden.get(_layer(module), ()))
    ]
    assert broken == []


def test_only_the_teacher_factory_knows_the_backends():
    broken = [
        f"{module} imports {name}"
        for module, names in _imports().items()
        for name in names
        if name.startswith(BACKENDS) and _layer(module) != "teachers"
    ]
    assert broken == []
