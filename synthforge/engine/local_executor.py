"""The local executor: every batch in this process, in plan order, with retries and splitting."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from synthforge.engine.executor import ExecutorKind, Result, process_with_retries
from synthforge.records import Record
from synthforge.stages.base import Stage
from synthforge.teachers.base import Teacher


class LocalExecutor:
    """Runs each batch in this process, in order."""

    def describe(self) -> dict[str, Any]:
        return {"kind": "local"}

    def workers(self) -> int:
        return 0

    def close(self) -> None:
        """Nothing to release."""

    def run(
        self, stage: Stage, batches: list[list[Record]], teacher: Teacher | None, retries: int
    ) -> Iterator[tuple[int, list[Result]]]:
        for number, batch in enumerate(batches):
            yield number, process_with_retries(stage, batch, teacher, retries)


EXECUTOR = ExecutorKind(
    name="local",
    settings=None,
    build=lambda settings, teacher_spec, teacher: LocalExecutor(),
    help="this process",
)
