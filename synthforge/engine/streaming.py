"""Consecutive per-record stages run as a pipeline: a record whose result is back moves on to the next stage while
others are still with the teacher, and several batches of every stage are in flight at once, so a teacher that
serves requests concurrently (an HTTP server's window, a continuous-batching decoder) is never left idle at a
batch or stage boundary.

The driver stays the only writer: it submits batches to the executor, commits each result to its stage's
checkpoint as it arrives, and hands the kept records to the next stage. A stage's results are assembled in its
input order at the end, so the output is the same as stage by stage, and a killed run resumes from whatever any
stage committed.
"""

from __future__ import annotations

import concurrent.futures as cf
from collections.abc import Callable
from dataclasses import dataclass, field

from tqdm.auto import tqdm

from synthforge.engine.context import RunContext
from synthforge.engine.stagework import Result, StageReport, StageWork
from synthforge.records import Drop, Record


@dataclass
class _Step:
    """One stage of the segment: what reached it (by seed order), its results, what waits to be batched."""

    work: StageWork
    inputs: dict[int, Record] = field(default_factory=dict)
    keys: dict[int, str] = field(default_factory=dict)
    results: dict[int, Result] = field(default_factory=dict)
    pending: list[int] = field(default_factory=list)
    in_flight: int = 0
    reused: int = 0
    bar: object = None


@dataclass(frozen=True)
class Schedule:
    """How a segment's batches are sent: at most ``in_flight`` at once, of up to ``batch`` records each;
    ``longest_first``: the first stage's batches are formed longest records first (similar lengths together:
    less padding for a teacher that decodes each batch as one), not in seed order."""

    in_flight: int
    batch: int
    longest_first: bool = False


def run_segment(
    ctx: RunContext,
    works: list[StageWork],
    records: list[Record],
    schedule: Schedule,
    probe: Callable[[], bool] = lambda: False,
) -> list[tuple[list[Record], list[Drop], StageReport]]:
    """Run per-record stages ``works`` over ``records`` as a pipeline, batches sent through the run's executor
    as ``schedule`` says; returns each stage's kept records, drops and report, as stage by stage. ``probe``:
    asked when a stage's first batch is out; true: the others wait for it (a remote teacher may be down: then
    one batch of requests was sent, not a window of them)."""
    steps = [_Step(w) for w in works]
    running: dict[cf.Future, tuple[int, list[int]]] = {}  # in submission order
    for step in steps:
        step.bar = tqdm(desc=step.work.stage.name, unit="rec", disable=ctx.quiet, leave=True)
    try:
        for order, record in enumerate(records):
            _arrive(steps, 0, order, record)
        if schedule.longest_first:
            steps[0].pending.sort(key=lambda i: (-record_length(records[i]), i))
        while True:
            _submit(ctx, steps, running, schedule, probe)
            if not running:
                break
            done, _ = cf.wait(list(running), return_when=cf.FIRST_COMPLETED)
            arrived: dict[int, list[tuple[int, Result]]] = {}  # by stage, in submission order
            failed: BaseException | None = None
            for future in [f for f in running if f in done]:
                k, orders = running.pop(future)
                steps[k].in_flight -= 1
                try:
                    results = future.result()
                except BaseException as exc:  # a bug or a user error: the others are committed, then it stops the run
                    failed = failed or exc
                    continue
                arrived.setdefault(k, []).extend(zip(orders, results, strict=True))
            for k, finished in sorted(arrived.items()):  # one checkpoint write per stage for all that finished
                step = steps[k]
                step.work.commit([(step.keys[i], step.inputs[i], r) for i, r in finished], ctx.budget)
                step.bar.update(len(finished))
                for order, result in finished:
                    step.results[order] = result
                    if isinstance(result, Record) and k + 1 < len(steps):
                        _arrive(steps, k + 1, order, result)
            if failed is not None:
                raise failed
    finally:
        for future in running:
            future.cancel()
        for step in steps:
            step.bar.close()
    return [
        step.work.finish(len(step.inputs), [step.results[i] for i in sorted(step.inputs)], step.reused)
        for step in steps
    ]


def record_length(record: Record) -> int:
    """What batches are sorted by, longest first: the prompt's and the answer's characters."""
    return len(record.prompt) + len(record.response or "")


def _arrive(steps: list[_Step], k: int, order: int, record: Record) -> None:
    """``record`` (the ``order``-th seed's) reaches stage ``k``: reused from its checkpoint and passed on, or queued."""
    step = steps[k]
    key = record.content_hash()
    step.inputs[order], step.keys[order] = record, key
    step.bar.total = len(step.inputs)
    cached = step.work.checkpoint.get(key)
    if cached is None:
        step.pending.append(order)
        return
    step.results[order], step.reused = cached, step.reused + 1
    step.bar.update(1)
    if isinstance(cached, Record) and k + 1 < len(steps):
        _arrive(steps, k + 1, order, cached)


def _submit(
    ctx: RunContext,
    steps: list[_Step],
    running: dict[cf.Future, tuple[int, list[int]]],
    schedule: Schedule,
    probe: Callable[[], bool],
) -> None:
    """Fill the free slots: later stages first (records finish sooner, less is held), whole batches, and a
    partial batch only when nothing upstream can still add to it; with ``probe``, a stage's first batch alone."""
    for k in reversed(range(len(steps))):
        step = steps[k]
        upstream_busy = any(s.pending or s.in_flight for s in steps[:k])
        chunk = schedule.batch
        while step.pending and len(running) < schedule.in_flight and (len(step.pending) >= chunk or not upstream_busy):
            if step.in_flight and not step.work.committed and probe():
                break  # the probe is still out
            orders, step.pending = step.pending[:chunk], step.pending[chunk:]
            batch = [step.inputs[i] for i in orders]
            running[ctx.executor.submit(step.work.stage, batch, ctx.team, ctx.retries)] = (k, orders)
            step.in_flight += 1
