"""Layers lean only downwards, exactly as the README's layout says: checked on every import statement of the
package, function-level imports included, with no exemptions; and no two modules import each other, even
through others."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "synthforge"
LAYERS = ("cli", "hub", "eval", "serve", "engine", "stages", "report", "train", "dedup", "constitution", "teachers")
# What each layer may never import (the core, the package's top-level modules, may import none of the layers).
FORBIDDEN = {
    "cli": (),
    "hub": ("cli", "eval", "serve", "stages", "train", "dedup", "teachers"),
    "eval": ("cli", "hub"),
    "serve": ("cli", "hub", "eval", "engine", "stages", "train", "dedup"),
    "engine": ("cli", "hub", "eval", "serve"),
    "stages": ("cli", "hub", "eval", "serve", "engine"),
    "report": ("cli", "hub", "eval", "serve", "engine", "stages", "train", "dedup", "teachers"),
    "train": ("cli", "hub", "eval", "serve", "engine", "stages"),
    "dedup": ("cli", "hub", "eval", "serve", "engine", "stages", "train", "teachers"),
    "constitution": ("cli", "hub", "eval", "serve", "engine", "stages", "train", "dedup", "teachers"),
    "teachers": ("cli", "hub", "eval", "serve", "engine", "stages", "train", "dedup", "report"),
    "core": LAYERS,
}


def _module(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts).removesuffix(".__init__")


def _imports() -> dict[str, set[str]]:
    """Module name → every synthforge module it imports (``from a import b`` counts ``a`` and ``a.b``)."""
    found: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
                names.update(f"{node.module}.{alias.name}" for alias in node.names)
            elif isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
        found[_module(path)] = {n for n in names if n.startswith("synthforge")}
    return found


def _layer(module: str) -> str:
    if module == "synthforge.__main__":
        return "cli"  # `python -m synthforge` is the CLI's second entry point
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in LAYERS) else "core"


def test_layers_only_lean_downwards():
    modules = _imports()
    broken = sorted(
        f"{module} imports {name}"
        for module, names in modules.items()
        for name in names
        if name in modules and _layer(name) in FORBIDDEN[_layer(module)]
    )
    assert broken == []


def test_only_the_teacher_factory_knows_the_backends():
    """No module imports a backend but the backends' own package; the factory names them only as strings."""
    broken = [
        f"{module} imports {name}"
        for module, names in _imports().items()
        for name in names
        if name.startswith("synthforge.teachers.backends.") and not module.startswith("synthforge.teachers.backends")
    ]
    assert broken == []


def test_no_import_circle():
    modules = _imports()
    edges = {
        m: {n for n in names if n in modules and n != m and not m.startswith(n + ".")} for m, names in modules.items()
    }

    def reaches(start: str, goal: str) -> bool:
        seen, todo = set(), [start]
        while todo:
            current = todo.pop()
            if current == goal:
                return True
            if current not in seen:
                seen.add(current)
                todo.extend(edges.get(current, ()))
        return False

    circles = sorted(f"{a} <-> {b}" for a in edges for b in edges[a] if reaches(b, a))
    assert circles == []
