"""Stopping a batch client at one point of a submission, the same six points for every test that does it:
"before upload" (the upload not sent), "upload unrecorded" (sent, its answer not yet recorded), "between upload and
create" (the upload recorded, the create not sent), "create unrecorded" (the batch made, not recorded), "polling"
(at the first poll), "download" (at the first result download).

`python -m tests.kill_at POINT ARGS...` runs `synthforge ARGS` in this process and kills it with SIGKILL there (a
real kill -9: no cleanup, no flush; whatever the run's log holds is what survives). In-process tests stop a client
by raising instead (:func:`patches` with an ``act`` that raises) and start a new one on the same log
(:func:`stopped_then_resumed`)."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from typing import Any

POINTS = ("before upload", "upload unrecorded", "between upload and create", "create unrecorded", "polling", "download")


def patches(point: str, act: Callable[[], None]) -> list[tuple[type, str, Any]]:
    """(class, name, replacement) that call ``act`` at ``point`` of an OpenAI batch submission."""
    from synthforge.teachers.http import JsonClient
    from synthforge.teachers.openai_batches import OpenAIBatches

    real_send, real_submit = JsonClient.send, OpenAIBatches.submit

    def at(hit: bool) -> None:
        if hit:
            act()

    async def send(self, method, path, raw=False, **request):
        at(point == "before upload" and method == "POST" and path == "/files")
        at(point == "between upload and create" and method == "POST" and path == "/batches")
        at(point == "polling" and method == "GET" and path.startswith("/batches/batch_"))
        at(point == "download" and method == "GET" and path.endswith("/content"))
        answer = await real_send(self, method, path, raw, **request)
        at(point == "upload unrecorded" and method == "POST" and path == "/files")
        return answer

    async def submit(self, intent, data, record):
        batch = await real_submit(self, intent, data, record)
        at(point == "create unrecorded")
        return batch

    return [(JsonClient, "send", send), (OpenAIBatches, "submit", submit)]


def once(error: type[Exception]) -> tuple[Callable[[], None], list[bool]]:
    """An ``act`` raising ``error`` the first time only, and the flag saying whether it is still armed."""
    armed = [True]

    def act() -> None:
        if armed[0]:
            armed[0] = False
            raise error()

    return act, armed


def stopped_then_resumed(make_teacher: Callable[[], Any], log_path: Any, ask: Callable[[Any], Any], error: type):
    """A batch-mode teacher stopped by ``error`` while ``ask`` runs, then a new one on the same run log (all a
    killed process leaves is its log and the server's state): the second one's answers."""
    import pytest

    from synthforge.engine.batch_log import BatchLog
    from synthforge.teachers.base import request_scope

    answers = None
    for attempt in range(2):
        teacher = make_teacher()
        try:
            teacher.keep_log(BatchLog(log_path).view("default"), frozenset({"respond-1"}))
            with request_scope("respond-1"):
                if attempt == 0:
                    with pytest.raises(error):
                        ask(teacher)
                else:
                    answers = ask(teacher)
        finally:
            teacher.close()
    return answers


def _kill() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":
    if sys.argv[1] not in POINTS:
        raise SystemExit(f"point must be one of {', '.join(POINTS)}")
    for owner, name, replacement in patches(sys.argv[1], _kill):
        setattr(owner, name, replacement)
    from synthforge.cli.main import main

    main(sys.argv[2:])
