"""What running one stage means, whichever way it is run (stage by stage, or pipelined with its neighbours): its
fingerprint and checkpoint file, the commits of its results, the tokens it spent, and its report."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from synthforge.engine.checkpoint import StageCheckpoint
from synthforge.engine.executor import TEACHER_FAILURE
from synthforge.errors import LabelsUnreliable, StageFailed, TokenBudgetSpent, UserError
from synthforge.files import write_atomic
from synthforge.hashing import canonical_json, stable_hash
from synthforge.records import Drop, Record, reason_kind
from synthforge.stages.base import Stage
from synthforge.stages.helpers.metrics import Metrics
from synthforge.teachers.base import Teacher

Result = Record | Drop


@dataclass
class StageReport:
    """What one stage did in this run."""

    name: str
    kind: str
    fingerprint: str
    inputs: int
    reused: int
    computed: int
    kept: int
    dropped: int
    completion_tokens: int
    prompt_tokens: int
    seconds: float
    why: str
    drop_reasons: dict[str, int] = field(default_factory=dict)


@dataclass
class Budget:
    """The run's token budget (``--max-tokens``): tokens used by this run's teacher calls so far."""

    limit: int | None
    used: int = 0

    def spend(self, tokens: int, stage: str) -> None:
        """Count ``tokens``; once the limit is reached, stop the run (what is done is checkpointed)."""
        self.used += tokens
        if self.limit is not None and self.used >= self.limit:
            raise TokenBudgetSpent(
                f"token budget spent: {self.used} of --max-tokens {self.limit} used (stopped in stage {stage}); "
                "finished work is checkpointed, rerun the same command to continue"
            )


def new_steps(before: Record, result: Result) -> list[dict[str, Any]]:
    """The trace steps a stage added to ``before`` in ``result``."""
    return record_of(result).steps[len(before.steps) :]


def record_of(result: Result) -> Record:
    return result.record if isinstance(result, Drop) else result


def new_tokens(before: Record, result: Result) -> tuple[int, int]:
    """(completion, prompt) tokens of the teacher calls a stage added to a record's trace."""
    steps = record_of(result).steps[len(before.steps) :]
    return (
        sum(int(step.get("completion_tokens", 0)) for step in steps),
        sum(int(step.get("prompt_tokens", 0)) for step in steps),
    )


def stop_if_all_failed(stage: Stage, results: list[Result]) -> None:
    """When every record of a stage's first batch failed at the teacher (wrong URL, server down), stop the run
    with that error instead of ledgering the same failure for every record; nothing is checkpointed."""
    failures = [r for r in results if isinstance(r, Drop) and r.reason.startswith(TEACHER_FAILURE)]
    if any("(not retryable)" in f.reason for f in failures):
        return  # an answer about a record itself (e.g. its prompt is too long), not a teacher that is down
    if results and len(failures) == len(results):
        raise UserError(
            f"stage {stage.name}: every request of the first batch failed ({len(results)} records), so the run "
            f"stops: {failures[-1].reason}"
        )


def teachers_identity(stage: Stage, team: Mapping[str, Teacher]) -> Any:
    """What identifies the teachers a stage calls, for its fingerprint: the one teacher's identity (as before named
    teachers), or each one's by name when it calls several; None when it calls none."""
    names = stage.teacher_names()
    if not names:
        return None
    if len(names) == 1:
        return team[names[0]].identity
    return {name: team[name].identity for name in names}


class StageWork:
    """One stage's run: its fingerprint (cache key) and checkpoint, the results committed to it, the tokens they
    cost, and the report. The driver alone calls :meth:`commit` (it is the only writer of checkpoints)."""

    def __init__(self, index: int, stage: Stage, team: Mapping[str, Teacher], checkpoints: Path, inputs: str = ""):
        parts = stage.fingerprint()
        parts["teacher"] = teachers_identity(stage, team)
        if inputs:
            parts["inputs"] = inputs  # a whole-dataset stage: the hash of all its input records
        self.stage, self.parts, self.checkpoints = stage, parts, checkpoints
        self.fingerprint = stable_hash(parts)
        self.stem = f"{index:02d}-{stage.name}"
        self.path = checkpoints / f"{self.stem}-{self.fingerprint[:16]}.jsonl"
        self.started = time.time()
        self.tokens = [0, 0]  # completion, prompt
        self.committed = 0
        self.metrics = Metrics()  # what the stage counts of the results this run computed (see Stage.halt)
        self._checkpoint: StageCheckpoint | None = None

    @property
    def checkpoint(self) -> StageCheckpoint:
        if self._checkpoint is None:
            self._checkpoint = StageCheckpoint(self.path)
        return self._checkpoint

    def commit(self, done: list[tuple[str, Record, Result]], budget: Budget) -> None:
        """Persist results (key, input record, result) of one batch, count their tokens, spend them."""
        if not self.committed:
            stop_if_all_failed(self.stage, [r for _, _, r in done])
        pairs = [(record, result) for _, record, result in done]
        self._check_annotations(pairs)
        self._check_steps(pairs)
        self.checkpoint.append([(key, result) for key, _, result in done])
        self.committed += len(done)
        spent = [new_tokens(record, result) for _, record, result in done]
        self.tokens[0] += sum(c for c, _ in spent)
        self.tokens[1] += sum(p for _, p in spent)
        budget.spend(sum(c + p for c, p in spent), self.stage.name)
        self._tally(pairs)

    def _check_annotations(self, done: list[tuple[Record, Result]]) -> None:
        """A stage leaves on records only the annotations it declares (``Stage.annotates``); anything else is a bug
        in it (a reader would have to guess what the key means), so the run stops."""
        declared = {a.key for a in self.stage.annotates}
        for before, result in done:
            after = record_of(result).meta
            new = [k for k in after if k not in declared and (k not in before.meta or after[k] != before.meta[k])]
            if new:
                raise StageFailed(
                    f"stage {self.stage.name} wrote annotation {new[0]!r}, which it doesn't declare (Stage.annotates; "
                    "declare it in synthforge/annotations.py or the stage's own module)"
                )

    def _check_steps(self, done: list[tuple[Record, Result]]) -> None:
        """A stage writes only the kinds of trace step it declares (``Stage.traces``), each with only its kind's
        fields (trace.py); anything else is a bug in it (readers would have to guess), so the run stops."""
        traced = self.stage.traced()
        for before, result in done:
            for step in new_steps(before, result):
                kind = traced.get(step.get("role"))
                if kind is None:
                    raise StageFailed(
                        f"stage {self.stage.name} wrote a trace step {step.get('role')!r} it doesn't declare "
                        "(Stage.traces; declare its kind in synthforge/trace.py)"
                    )
                extra = sorted(set(step) - kind.allowed)
                if extra:
                    raise StageFailed(
                        f"stage {self.stage.name} wrote field {extra[0]!r} on a {step['role']} step, which its kind "
                        f"({kind.fields.__name__}, synthforge/trace.py) doesn't declare"
                    )

    def _tally(self, done: list[tuple[Record, Result]]) -> None:
        """Count the stage's new trace steps, and stop the run when the stage says so (:meth:`Stage.halt`)."""
        for before, result in done:
            for step in new_steps(before, result):
                if step.get("stage") == self.stage.name:
                    self.stage.tally(step, self.metrics)
        reason = self.stage.halt(self.metrics.summary(self.stage.metric_groups))
        if reason is not None:
            raise LabelsUnreliable(
                f"stage {self.stage.name}: {reason}. Stopped after {self.committed} records; finished work is "
                "checkpointed"
            )

    def finish(self, inputs: int, results: list[Result], reused: int) -> tuple[list[Record], list[Drop], StageReport]:
        """The stage's kept records and drops (in input order) and its report; its fingerprint file is written."""
        cached = reused == inputs
        why = "all records reused" if cached else self._explain_change()
        write_atomic(self.checkpoints / f"{self.stem}.json", canonical_json(self.parts))
        kept = [r for r in results if isinstance(r, Record)]
        dropped = [r for r in results if isinstance(r, Drop)]
        report = StageReport(
            name=self.stage.name,
            kind=self.stage.kind,
            fingerprint=self.fingerprint,
            inputs=inputs,
            reused=reused,
            computed=inputs - reused,
            kept=len(kept),
            dropped=len(dropped),
            completion_tokens=self.tokens[0],
            prompt_tokens=self.tokens[1],
            seconds=round(time.time() - self.started, 3),
            why=why,
            drop_reasons=dict(Counter(reason_kind(d.reason) for d in dropped).most_common()),
        )
        return kept, dropped, report

    def _explain_change(self) -> str:
        """Why the fingerprint differs from the last run's: the top-level parts that changed."""
        previous_path = self.checkpoints / f"{self.stem}.json"
        if not previous_path.is_file():
            return "no earlier run of this stage"
        previous: dict[str, Any] = json.loads(previous_path.read_text(encoding="utf-8"))
        now = json.loads(canonical_json(self.parts))  # as written: mapping keys are strings there
        changed = sorted(k for k in set(previous) | set(now) if previous.get(k) != now.get(k))
        return "changed: " + ", ".join(changed) if changed else "same settings, new input records"
