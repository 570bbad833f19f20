"""The run's write-ahead log of batch submissions: ``checkpoints/batches.jsonl``, beside the stages' checkpoints.

Teachers in batch mode report each step of a submission (an intent before anything reaches the server, the upload,
the create, the end, the release; see :mod:`synthforge.teachers.batch_api`); the engine records it here, one JSON
line fsynced before the teacher goes on, so a run killed at any point finds on resume every batch it made. One
writer: the run (its folder is locked) appends under one lock, whichever thread the teacher reports from. A torn
last line of a killed run is cut on reload, like the checkpoints'.

Each line names the teacher it belongs to (its name in the pipeline), so the teachers of a pool keep one log.
The states a teacher reports of its batches as they change are shown, not recorded (:class:`BatchBars`).
"""

from __future__ import annotations

import json
import sys
import threading
import weakref
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from synthforge.engine.checkpoint import append_durably, read_appended
from synthforge.engine.rundir import BATCH_LOG, CHECKPOINTS
from synthforge.hashing import stable_hash
from synthforge.stages.base import Stage
from synthforge.teachers.base import Batched, Teacher, sends_batches
from synthforge.teachers.batch_api import BatchState, state_line
from synthforge.teachers.team import Team


class BatchLog:
    """``path``'s events, and the one writer that appends to it; ``watch`` is shown each batch's states."""

    def __init__(self, path: Path, watch: BatchBars | None = None):
        self.path = path
        self.watch = watch or BatchBars(True, lambda line: print(line, file=sys.stderr, flush=True))
        self._events = read_appended(path)
        self._lock = threading.Lock()

    @classmethod
    def of_run(cls, out_dir: Path, watch: BatchBars | None = None) -> BatchLog:
        return cls(out_dir / CHECKPOINTS / BATCH_LOG, watch)

    def owners(self) -> set[str]:
        """The teachers that recorded something."""
        return {e["teacher"] for e in self._events}

    def view(self, owner: str) -> TeacherLog:
        """The journal of the teacher called ``owner``."""
        return TeacherLog(self, owner)

    def append(self, event: dict[str, Any]) -> None:
        with self._lock:
            append_durably(self.path, json.dumps(event, ensure_ascii=False) + "\n")
            self._events.append(event)

    def events_of(self, owner: str) -> list[dict[str, Any]]:
        with self._lock:
            return [e for e in self._events if e.get("teacher") == owner]


class TeacherLog:
    """One teacher's part of the run's :class:`BatchLog` (a :class:`~synthforge.teachers.base.BatchJournal`)."""

    def __init__(self, log: BatchLog, owner: str):
        self.log, self.owner = log, owner

    def events(self) -> list[dict[str, Any]]:
        return self.log.events_of(self.owner)

    def record(self, event: dict[str, Any]) -> None:
        self.log.append({"teacher": self.owner, **event})

    def shown(self, state: BatchState) -> None:
        self.log.watch(state)

    def say(self, line: str) -> None:
        self.log.watch.log(line)


class BatchBars:
    """Each batch's state as its server reports it (validating, in_progress, finalizing, completed; Anthropic's
    in_progress, ended) with its counts: a progress bar per batch, or a log line per change when bars are off
    (``quiet``; None: bars only on a terminal)."""

    def __init__(self, quiet: bool | None, log: Callable[[str], None]):
        self.quiet, self.log = quiet, log
        self.bars: dict[str, Any] = {}
        self._lock = threading.Lock()

    def __call__(self, state: BatchState) -> None:
        from tqdm.auto import tqdm

        with self._lock:
            bar = self.bars.get(state.id)
            if bar is None:
                bar = tqdm(total=state.total, unit="req", disable=self.quiet, leave=True, dynamic_ncols=True)
                self.bars[state.id] = bar
            if bar.disable:
                self.log(state_line(state))
            bar.total, bar.n = state.total, state.done
            bar.set_description(f"batch …{state.id[-8:]} {state.status}", refresh=True)
            if not state.running:
                bar.close()


_SCOPES: weakref.WeakKeyDictionary[Stage, str] = weakref.WeakKeyDictionary()


def stage_scope(stage: Stage) -> str:
    """The request scope of a stage's teacher calls: its name and the hash of its settings (templates,
    constitution, config), so a batch sent for settings since changed is known to be no longer wanted."""
    if stage not in _SCOPES:
        _SCOPES[stage] = f"{stage.name}-{stable_hash(stage.fingerprint())[:12]}"
    return _SCOPES[stage]


def batched_teachers(team: Team) -> dict[str, Teacher]:
    """The team's batch-mode teachers, each once, under its first name (the owner of its log lines)."""
    found: dict[int, tuple[str, Teacher]] = {}
    for name in sorted(team):
        if sends_batches(team[name]):
            found.setdefault(id(team[name]), (name, team[name]))
    return dict(found.values())


def keep_logs(log: BatchLog, teachers: dict[str, Batched], stages: Iterable[Stage]) -> int:
    """Hand each batch-mode teacher its part of the run's log; batches of stage settings no longer in the pipeline
    are cancelled (how many)."""
    live = frozenset(stage_scope(s) for s in stages)
    return sum(teacher.keep_log(log.view(name), live) for name, teacher in teachers.items())
