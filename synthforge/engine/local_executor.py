"""The local executor: batches in this process, with retries and splitting — one at a time in plan order, or, for
a teacher that serves concurrent calls (an HTTP window, a continuous-batching decoder), several at once on
worker threads (``submit``), which lets the engine pipeline consecutive stages."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from synthforge.engine.executor import ExecutorKind, Result, Team, process_with_retries
from synthforge.records import Record
from synthforge.settings import renamed
from synthforge.stages.base import Stage


@dataclass
class LocalSettings:
    """The ``engine:`` keys of the local executor."""

    batches_in_flight: int | None = renamed("workers", default=None)
    """Batches sent to the teachers at once, each on a thread of this process (null: enough to keep every
    teacher's concurrent requests busy). Read under its older name ``workers`` too."""

    def __post_init__(self) -> None:
        if self.batches_in_flight is not None and self.batches_in_flight < 1:
            raise ValueError(f"batches_in_flight must be >= 1, got {self.batches_in_flight}")


class LocalExecutor:
    """Runs batches in this process: in order, or ``submit``-ted to a pool of worker threads."""

    pipelines = True

    def __init__(self, batches_in_flight: int | None = None):
        self.batches_in_flight = batches_in_flight
        self._pool: ThreadPoolExecutor | None = None

    def describe(self) -> dict[str, Any]:
        return {"kind": "local", **({"batches_in_flight": n} if (n := self.batches_in_flight) else {})}

    def workers(self) -> int:
        return 0

    def submit(self, stage: Stage, batch: list[Record], team: Team, retries: int) -> Future:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.batches_in_flight or 128, thread_name_prefix="synthforge-batch")
        return self._pool.submit(process_with_retries, stage, batch, team, retries)

    def close(self) -> None:
        """Let the worker threads go."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def run(
        self, stage: Stage, batches: list[list[Record]], team: Team, retries: int
    ) -> Iterator[tuple[int, list[Result]]]:
        for number, batch in enumerate(batches):
            yield number, process_with_retries(stage, batch, team, retries)


EXECUTOR = ExecutorKind(
    name="local",
    settings=LocalSettings,
    build=lambda settings, teacher_spec, team: LocalExecutor(settings.batches_in_flight if settings else None),
    help="this process",
)
