"""What every part of one run shares, passed as one value instead of long argument lists: the prepared
pipeline, where it writes, its teachers, how it runs, where it logs, the executor, the token budget and when
it started."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from synthforge.engine.executor import Executor
from synthforge.engine.prepare import PreparedRun
from synthforge.engine.rundir import CHECKPOINTS
from synthforge.engine.spec import PipelineSpec
from synthforge.engine.stagework import Budget
from synthforge.teachers.team import Team

Log = Callable[[str], None]


@dataclass
class RunOptions:
    """How to run (none of these change outputs, so none are part of cache keys)."""

    out_dir: Path | None = None
    limit: int | None = None
    fresh: bool = False
    progress: bool | None = None  # None: only when stderr is a terminal
    explain: bool = False
    max_tokens: int | None = None  # stop cleanly once this run's teacher calls used this many tokens


@dataclass
class RunContext:
    """One run in progress: ``prepared`` (the validated pipeline, its stages and records), ``out_dir`` (claimed and
    locked), ``team`` (its teachers by name), ``options``, ``log``, ``executor`` (where batches run), ``budget``
    (the tokens it may still spend) and ``started`` (its start, ``time.time()``)."""

    prepared: PreparedRun
    out_dir: Path
    team: Team
    options: RunOptions
    log: Log
    executor: Executor
    budget: Budget
    started: float

    @property
    def spec(self) -> PipelineSpec:
        return self.prepared.spec

    @property
    def checkpoints(self) -> Path:
        """Where each stage's finished batches are kept."""
        return self.out_dir / CHECKPOINTS

    @property
    def retries(self) -> int:
        """Tries per batch, then per record, before a record goes to the drop ledger."""
        return self.spec.teacher.max_retries

    @property
    def quiet(self) -> bool | None:
        """Whether progress bars are off (None: only when stderr is not a terminal)."""
        return None if self.options.progress is None else not self.options.progress
