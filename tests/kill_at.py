"""`python -m tests.kill_at POINT ARGS...`: run `synthforge ARGS` in this process and kill it with SIGKILL at one
point of a batch submission (a real kill -9: no cleanup, no flush, whatever the log holds is what survives).

Points: "before upload" (the upload not sent), "upload unrecorded" (sent, its answer not yet recorded), "between
upload and create" (the upload recorded, the create not sent), "create unrecorded" (the batch made, not
recorded), "polling" (at the first poll), "download" (at the first result download)."""

from __future__ import annotations

import os
import signal
import sys

POINTS = ("before upload", "upload unrecorded", "between upload and create", "create unrecorded", "polling", "download")


def arm(point: str) -> None:
    """Patch the HTTP client and the OpenAI batch provider to kill this process at ``point``."""
    from synthforge.teachers.http import JsonClient
    from synthforge.teachers.openai_batches import OpenAIBatches

    real_send, real_submit = JsonClient.send, OpenAIBatches.submit

    def kill_if(hit: bool) -> None:
        if hit:
            os.kill(os.getpid(), signal.SIGKILL)

    async def send(self, method, path, raw=False, **request):
        kill_if(point == "before upload" and method == "POST" and path == "/files")
        kill_if(point == "between upload and create" and method == "POST" and path == "/batches")
        kill_if(point == "polling" and method == "GET" and path.startswith("/batches/batch_"))
        kill_if(point == "download" and method == "GET" and path.endswith("/content"))
        answer = await real_send(self, method, path, raw, **request)
        kill_if(point == "upload unrecorded" and method == "POST" and path == "/files")
        return answer

    async def submit(self, intent, data, record):
        batch = await real_submit(self, intent, data, record)
        kill_if(point == "create unrecorded")
        return batch

    JsonClient.send, OpenAIBatches.submit = send, submit


if __name__ == "__main__":
    if sys.argv[1] not in POINTS:
        raise SystemExit(f"point must be one of {', '.join(POINTS)}")
    arm(sys.argv[1])
    from synthforge.cli.main import main

    main(sys.argv[2:])
