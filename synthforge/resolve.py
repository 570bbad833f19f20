"""One resolver for every ``module:attribute`` reference: the registries' entries (stages, teacher backends,
executors), a user's own stage in a pipeline (``- mypkg.stages:Shout: {...}``) and a predicate filter's function.
A reference that can't be imported is one line naming where it was written and why."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any

from synthforge.settings import SpecError


def resolve(ref: str, where: str = "", base_dir: Path | None = None, what: str = "attribute") -> Any:
    """The object ``module:attribute`` names (``attribute`` may be dotted: ``Outer.Inner``). With ``base_dir``, a
    module file next to the pipeline file is imported first (``base_dir/module.py``)."""
    module_name, sep, attribute = ref.partition(":")
    if not sep or not module_name or not attribute:
        raise SpecError(f"{where}: {ref!r} is not a reference of the form module:attribute")
    local = (base_dir / (module_name.replace(".", "/") + ".py")) if base_dir else None
    try:
        if local is not None and local.is_file():
            spec = importlib.util.spec_from_file_location(f"synthforge_user.{module_name}", local)
            assert spec is not None and spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            sys.modules[spec.name] = module
            spec.loader.exec_module(module)
        else:
            module = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - any import problem is in the user's module; say which and why
        raise SpecError(f"{where}: cannot import {module_name!r}: {type(exc).__name__}: {exc}") from None
    value: Any = module
    for part in attribute.split("."):
        if not hasattr(value, part):
            raise SpecError(f"{where}: {module_name!r} has no {what} {attribute!r}")
        value = getattr(value, part)
    return value
