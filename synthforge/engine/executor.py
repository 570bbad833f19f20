"""Executors map a stage over the batches the driver planned; the driver alone commits results.

The split is datatrove's: blocks (stages) know nothing of how they are run. The local executor runs the
batches in this process, in order; another (e.g. Ray actors holding teacher replicas) may run them elsewhere
and yield them in any order, since the driver checkpoints each result as it arrives. ``EXECUTORS`` is the
registry: a new executor is one module beside the local one exporting an :class:`ExecutorKind`, plus its line.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Protocol

from synthforge.engine.batch_log import stage_scope
from synthforge.errors import StageFailed, TeacherError, UserError
from synthforge.records import Drop, Record
from synthforge.resolve import resolve
from synthforge.settings import SpecError
from synthforge.stages.base import Stage
from synthforge.teachers.base import Teacher, request_scope
from synthforge.teachers.config import TeacherSpec

Team = Mapping[str, Teacher]  # the run's teachers by name (teachers.team)

TEACHER_FAILURE = "teacher error"
Result = Record | Drop


class Executor(Protocol):
    """Runs ``stage.process`` over planned batches; yields ``(batch number, one result per record)``.
    ``pipelines``: it can also ``submit`` single batches, so the engine may pipeline consecutive stages;
    ``batches_in_flight``: how many it is told to keep submitted at once (None: the engine sizes it)."""

    pipelines: bool
    batches_in_flight: int | None

    def run(
        self, stage: Stage, batches: list[list[Record]], team: Team, retries: int
    ) -> Iterator[tuple[int, list[Result]]]: ...

    def describe(self) -> dict[str, Any]:
        """What the manifest records about how the run was executed."""
        ...

    def workers(self) -> int:
        """Workers a whole-dataset stage with a distributed form may use (0: run it in this process)."""
        ...

    def submit(self, stage: Stage, batch: list[Record], team: Team, retries: int) -> Future:
        """Start one batch and return at once: a future of its results (executors that can pipeline stages;
        one that can't raises ``NotImplementedError`` and the engine runs stage by stage)."""
        ...

    def close(self) -> None:
        """Release what the executor holds (workers, actors)."""
        ...


EXECUTOR_MEMBERS = ("pipelines", "batches_in_flight", "run", "describe", "workers", "close")  # submit: if pipelines


@dataclass(frozen=True)
class ExecutorKind:
    """One executor: its settings (the ``engine:`` keys beyond ``kind`` and ``chunk_size``; None: it has none),
    how to build it from them, the default teacher's spec and the run's teachers, and a line for ``--help``."""

    name: str
    settings: type | None
    build: Callable[[Any, TeacherSpec, Team], Executor]
    help: str


EXECUTORS: dict[str, str] = {
    "local": "synthforge.engine.local_executor:EXECUTOR",
    "ray": "synthforge.engine.ray_executor:EXECUTOR",
}


def executor_kind(name: str, where: str = "engine") -> ExecutorKind:
    """The registered executor called ``name``; an unknown one names the known ones."""
    if name not in EXECUTORS:
        known = " or ".join(repr(k) for k in EXECUTORS)
        raise SpecError(f"{where}: kind must be {known}, got {name!r}")
    return resolve(EXECUTORS[name], where)


def stage_bug(stage: Stage, exc: Exception) -> StageFailed:
    """The error that stops a run when a stage raised something other than a teacher error."""
    return StageFailed(
        f"stage {stage.name} raised {type(exc).__name__}: {exc} — a bug, not a teacher failure, so the run "
        "stops (checkpoints so far are kept)"
    )


def process_with_retries(stage: Stage, batch: list[Record], team: Team, retries: int) -> list[Result]:
    """Run a batch; on a teacher error retry it, then split it record by record; a record that still fails
    becomes a drop with the error. Any other exception is a bug and stops the run."""
    error: TeacherError | None = None
    for _ in range(retries + 1):
        try:
            with request_scope(stage_scope(stage)):  # a batch-mode teacher records which stage sent what
                results = stage.run_batch(batch, team)
        except UserError:
            raise
        except TeacherError as exc:
            error = exc
            if not exc.retryable:
                break
            continue
        except Exception as exc:
            raise stage_bug(stage, exc) from exc
        if len(results) != len(batch):
            raise StageFailed(f"stage {stage.name} returned {len(results)} results for {len(batch)} records")
        return results
    if len(batch) > 1:
        return [result for record in batch for result in process_with_retries(stage, [record], team, retries)]
    attempts = "1 attempt (not retryable)" if error is not None and not error.retryable else f"{retries + 1} attempt(s)"
    return [stage.drop(batch[0], f"{TEACHER_FAILURE} after {attempts} alone: {error}")]


def whole_with_retries(
    stage: Any,
    records: list[Record],
    team: Team,
    progress: Callable[[int], None],
    journal: Any,
    retries: int,
) -> list[Result]:
    """A whole-dataset stage's results; a teacher error is retried (journaled calls are not repeated), then
    stops the run with one line; any other exception is a bug."""
    for attempt in range(retries + 1):
        try:
            with request_scope(stage_scope(stage)):
                return stage.run_all(records, team, progress, journal)
        except UserError:
            raise
        except TeacherError as exc:
            if attempt == retries or not exc.retryable:
                raise UserError(
                    f"stage {stage.name}: {TEACHER_FAILURE} after {attempt + 1} attempt(s): {exc} "
                    "(finished teacher calls are journaled: rerun the same command to resume)"
                ) from None
        except Exception as exc:
            raise stage_bug(stage, exc) from exc
    raise AssertionError("unreachable")
