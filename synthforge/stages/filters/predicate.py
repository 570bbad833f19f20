"""A user filter: any ``module:function`` taking a record and returning bool or (False, reason).

The module is found on ``sys.path`` or next to the pipeline file; its source hash is part of the stage
fingerprint, so editing the function reruns the stage.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from synthforge.hashing import file_sha256
from synthforge.records import Record
from synthforge.resolve import resolve
from synthforge.settings import SpecError
from synthforge.stages.filters.base import FilterStage


@dataclass
class PredicateFilterConfig:
    """``function``: "module:function" (e.g. "my_filters:no_urls")."""

    function: str

    def __post_init__(self) -> None:
        module, _, name = self.function.partition(":")
        if not module or not name:
            raise ValueError(f"function must look like 'module:function', got {self.function!r}")


class PredicateFilter(FilterStage):
    kind = "filter_predicate"
    Config = PredicateFilterConfig

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.function, self.source = load_function(self.config.function, self.resources.base_dir, self.where)

    def fingerprint(self) -> dict[str, Any]:
        return {**super().fingerprint(), "function_source": file_sha256(self.source) if self.source else None}

    def user_code(self) -> list[tuple[str, Path | None]]:
        return [*super().user_code(), (self.config.function, self.source)]

    def filter(self, record: Record) -> bool | tuple[bool, str]:
        try:
            verdict = self.function(record)
        except Exception as exc:  # noqa: BLE001 - the record is kept in the ledger with the error
            return False, f"{self.config.function} raised {type(exc).__name__}: {exc}"
        if isinstance(verdict, tuple):
            reason = str(verdict[1]) if len(verdict) > 1 else f"rejected by {self.config.function}"
            return bool(verdict[0]) or (False, reason)
        return True if verdict else (False, f"rejected by {self.config.function}")


def load_function(ref: str, base_dir: Path | None, where: str) -> tuple[Callable[[Record], Any], Path | None]:
    """Import ``module:function``, looking next to the pipeline file first; errors name ``where``."""
    function = resolve(ref, f"{where}.function", base_dir, "function")
    if not callable(function):
        raise SpecError(f"{where}.function: {ref!r} is not a function")
    source = inspect.getsourcefile(function)
    return function, Path(source) if source else None
