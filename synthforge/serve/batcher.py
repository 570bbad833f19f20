"""Dynamic batching for ``synthforge serve``: requests that arrive together run together on one teacher.

A worker thread takes the first waiting request, collects more for up to ``wait_ms`` milliseconds or until
``max_batch`` samples, and hands them to the teacher in one call. Each request keeps its own seed, so its
output doesn't depend on which requests shared its batch. A request whose client has gone is skipped.
"""

from __future__ import annotations

import asyncio
import queue
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from synthforge.teachers.base import Completion, SamplingParams


@dataclass
class _Job:
    kind: str  # "chat" | "text"
    prompt: Any  # a conversation or a raw text
    params: SamplingParams
    done: Callable[[Any], None]
    samples: int = 1
    cancelled: bool = False  # its client has gone: skipped if not started


@dataclass
class Batcher:
    """Runs concurrent requests on one teacher in batches: collect for ``wait_ms`` or up to ``max_batch``."""

    teacher: Any
    max_batch: int = 16
    wait_ms: float = 5.0
    batches: list[int] = field(default_factory=list)  # samples per teacher call, for tests and stats
    _queue: queue.Queue = field(default_factory=queue.Queue)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._work, name="synthforge-batcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._queue.put(None)

    async def run(self, kind: str, prompt: Any, params: SamplingParams) -> list[Completion]:
        """Queue one request and wait for its completions."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future = loop.create_future()

        def done(result: Any) -> None:
            def settle() -> None:
                if future.done():
                    return
                if isinstance(result, BaseException):
                    future.set_exception(result)
                else:
                    future.set_result(result)

            loop.call_soon_threadsafe(settle)

        job = _Job(kind, prompt, params, done, params.n)
        self._queue.put(job)
        try:
            return await future
        except asyncio.CancelledError:
            job.cancelled = True  # the client went away: don't spend the teacher on it
            raise

    def _collect(self, first: _Job) -> list[_Job]:
        jobs, samples = [first], 0 if first.cancelled else first.samples
        deadline = time.monotonic() + self.wait_ms / 1000.0
        while samples < self.max_batch:
            try:
                job = self._queue.get(timeout=max(deadline - time.monotonic(), 0.0))
            except queue.Empty:
                break
            if job is None:
                self._queue.put(None)
                break
            jobs.append(job)
            samples += 0 if job.cancelled else job.samples
        return jobs

    def _work(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            jobs = self._collect(first)
            for kind in ("chat", "text"):
                group = [j for j in jobs if j.kind == kind and not j.cancelled]
                if group:
                    self._run_group(kind, group)

    def _run_group(self, kind: str, jobs: list[_Job]) -> None:
        self.batches.append(sum(j.samples for j in jobs))
        call = self.teacher.generate if kind == "chat" else self.teacher.complete
        try:
            results = call([j.prompt for j in jobs], [j.params for j in jobs])
        except Exception as exc:  # noqa: BLE001 - reported to each waiting request as a server error
            traceback.print_exc(file=sys.stderr)
            for job in jobs:
                job.done(exc)
            return
        for job, result in zip(jobs, results, strict=True):
            job.done(result)
