"""The Batch API of ``synthforge serve``, in OpenAI's shapes: files uploaded for batches, batches and their results.

State lives in a folder (``--state-dir``; one server per folder, locked), so files and batches survive a restart:

    files/<id>.json        a file's object (OpenAI's FileObject)      files/<id>.data   its bytes
    batches/<id>.json      a batch's object (OpenAI's Batch)          batches/<id>.results.jsonl
                                                                      one line per finished request, appended

Every object is written whole (atomic replace); results are appended a line at a time, so a server killed while
a batch runs resumes it from the requests without a result. Files and batches older than the retention time are
deleted. The runner (:class:`BatchRunner`) answers each request through the server's own handler, at low priority:
while interactive requests are running, at most one batch request is in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from synthforge.files import make_dirs, write_atomic

ENDPOINTS = ("/v1/chat/completions", "/v1/completions")
WINDOWS = {"24h": 24 * 3600}
DONE = ("completed", "failed", "expired", "cancelled")


class BatchError(Exception):
    """A request about files or batches that can't be served: ``status`` and an OpenAI error ``kind``."""

    def __init__(self, message: str, status: int = 400, kind: str = "invalid_request_error", param: str | None = None):
        super().__init__(message)
        self.status, self.kind, self.param = status, kind, param


@dataclass(frozen=True)
class BatchSettings:
    """Where the Batch API keeps its state and its limits."""

    state_dir: Path
    max_upload_bytes: int = 200 << 20  # a larger upload is answered 413 (OpenAI's limit for batch files)
    max_requests: int = 50_000  # requests in one batch file (OpenAI's limit)
    retention_s: float = 30 * 24 * 3600.0  # files and batches older than this are deleted


class BatchStore:
    """Files and batches on disk (see the module's docstring); ``clock`` gives the time (tests use a fake one)."""

    def __init__(self, settings: BatchSettings, clock: Callable[[], float] = time.time):
        self.settings = settings
        self.clock = clock
        self.files_dir = settings.state_dir / "files"
        self.batches_dir = settings.state_dir / "batches"
        make_dirs(self.files_dir)
        make_dirs(self.batches_dir)

    # -- files -------------------------------------------------------------------------------------------
    def create_file(self, data: bytes, filename: str, purpose: str) -> dict[str, Any]:
        if purpose != "batch":
            raise BatchError(f"purpose must be 'batch' on this server, got {purpose!r}", param="purpose")
        if len(data) > self.settings.max_upload_bytes:
            raise BatchError(
                f"file is larger than {self.settings.max_upload_bytes} bytes", status=413, kind="request_too_large"
            )
        return self._new_file(data, filename, purpose)

    def _new_file(self, data: bytes, filename: str, purpose: str) -> dict[str, Any]:
        file_id = "file-" + secrets.token_hex(12)
        (self.files_dir / f"{file_id}.data").write_bytes(data)
        obj = {
            "id": file_id,
            "object": "file",
            "bytes": len(data),
            "created_at": int(self.clock()),
            "filename": filename,
            "purpose": purpose,
            "status": "processed",
        }
        write_atomic(self.files_dir / f"{file_id}.json", json.dumps(obj))
        return obj

    def file(self, file_id: str) -> dict[str, Any]:
        return _load(self.files_dir, file_id, "file")

    def content(self, file_id: str) -> bytes:
        self.file(file_id)
        return (self.files_dir / f"{file_id}.data").read_bytes()

    def list_files(self, purpose: str | None, after: str | None, limit: int) -> dict[str, Any]:
        """Newest first, ``limit`` files (of ``purpose`` when given) after the file ``after`` (OpenAI's page)."""
        files = [json.loads(p.read_text()) for p in self.files_dir.glob("file-*.json")]
        found = [f for f in files if purpose is None or f["purpose"] == purpose]
        return _page(sorted(found, key=lambda f: (-f["created_at"], f["id"])), after, limit)

    def delete_file(self, file_id: str) -> dict[str, Any]:
        """Delete a file (its object and its bytes); a running batch's input file is kept (409)."""
        self.file(file_id)
        for meta in self.batches_dir.glob("batch_*.json"):
            batch = json.loads(meta.read_text())
            if batch["input_file_id"] == file_id and batch["status"] not in DONE:
                raise BatchError(f"file {file_id} is the input of running batch {batch['id']}", status=409)
        for path in self.files_dir.glob(f"{file_id}.*"):
            path.unlink(missing_ok=True)
        return {"id": file_id, "object": "file", "deleted": True}

    # -- batches -----------------------------------------------------------------------------------------
    def create_batch(self, body: dict[str, Any]) -> dict[str, Any]:
        endpoint, window = body.get("endpoint"), body.get("completion_window")
        if endpoint not in ENDPOINTS:
            raise BatchError(f"endpoint must be one of {', '.join(ENDPOINTS)}, got {endpoint!r}", param="endpoint")
        if window not in WINDOWS:
            raise BatchError(f"completion_window must be 24h, got {window!r}", param="completion_window")
        metadata = body.get("metadata")
        if metadata is not None and not (
            isinstance(metadata, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items())
        ):
            raise BatchError("metadata must map strings to strings", param="metadata")
        input_file = self.file(str(body.get("input_file_id")))
        now = int(self.clock())
        batch = {
            "id": "batch_" + secrets.token_hex(12),
            "object": "batch",
            "endpoint": endpoint,
            "errors": None,
            "input_file_id": input_file["id"],
            "completion_window": window,
            "status": "validating",
            "output_file_id": None,
            "error_file_id": None,
            "created_at": now,
            "in_progress_at": None,
            "expires_at": now + WINDOWS[window],
            "finalizing_at": None,
            "completed_at": None,
            "failed_at": None,
            "expired_at": None,
            "cancelling_at": None,
            "cancelled_at": None,
            "request_counts": {"total": 0, "completed": 0, "failed": 0},
            "metadata": metadata,
        }
        self.save(batch)
        return batch

    def batch(self, batch_id: str) -> dict[str, Any]:
        return _load(self.batches_dir, batch_id, "batch")

    def save(self, batch: dict[str, Any]) -> None:
        write_atomic(self.batches_dir / f"{batch['id']}.json", json.dumps(batch))

    def list_batches(self, after: str | None, limit: int) -> dict[str, Any]:
        """Newest first, ``limit`` of them after the batch ``after`` (OpenAI's cursor page)."""
        batches = sorted(
            (json.loads(p.read_text()) for p in self.batches_dir.glob("batch_*.json")),
            key=lambda b: (-b["created_at"], b["id"]),
        )
        return _page(batches, after, limit)

    def cancel(self, batch_id: str) -> dict[str, Any]:
        batch = self.batch(batch_id)
        if batch["status"] in DONE or batch["status"] == "cancelling":
            if batch["status"] in ("cancelled", "cancelling"):
                return batch
            raise BatchError(f"batch {batch_id} is {batch['status']}: it can't be cancelled", status=409)
        batch["status"], batch["cancelling_at"] = "cancelling", int(self.clock())
        self.save(batch)
        return batch

    # -- results -----------------------------------------------------------------------------------------
    def results(self, batch_id: str) -> dict[str, dict[str, Any]]:
        """The finished requests' result lines by custom_id (a torn last line of a killed server is ignored)."""
        path = self.batches_dir / f"{batch_id}.results.jsonl"
        found: dict[str, dict[str, Any]] = {}
        if path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    row = json.loads(line)
                except ValueError:
                    continue
                found[row["custom_id"]] = row
        return found

    def append_result(self, batch_id: str, row: dict[str, Any]) -> None:
        with open(self.batches_dir / f"{batch_id}.results.jsonl", "a", encoding="utf-8") as out:
            out.write(json.dumps(row, ensure_ascii=False) + "\n")

    def finish(self, batch: dict[str, Any], order: list[str], status: str) -> dict[str, Any]:
        """Write the output file (successes) and the error file (failures) in input order, and end the batch."""
        results = self.results(batch["id"])
        done = [results[c] for c in order if c in results]
        good = [r for r in done if r["response"] and r["response"]["status_code"] == 200]
        bad = [r for r in done if r not in good]
        lines = lambda rows: "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()  # noqa: E731
        if good:
            batch["output_file_id"] = self._new_file(lines(good), f"{batch['id']}_output.jsonl", "batch_output")["id"]
        if bad:
            batch["error_file_id"] = self._new_file(lines(bad), f"{batch['id']}_error.jsonl", "batch_output")["id"]
        batch["request_counts"] = {"total": len(order), "completed": len(good), "failed": len(bad)}
        batch["status"] = status
        batch[f"{status}_at"] = int(self.clock())
        self.save(batch)
        return batch

    def sweep(self) -> int:
        """Delete files and batches older than the retention time; how many objects went."""
        cutoff = self.clock() - self.settings.retention_s
        gone = 0
        for folder in (self.files_dir, self.batches_dir):
            for meta in folder.glob("*.json"):
                obj = json.loads(meta.read_text())
                if obj["created_at"] < cutoff and obj.get("status") not in ("validating", "in_progress"):
                    for path in folder.glob(f"{obj['id']}.*"):
                        path.unlink(missing_ok=True)
                    gone += 1
        return gone


def _page(objects: list[dict[str, Any]], after: str | None, limit: int) -> dict[str, Any]:
    """OpenAI's cursor page: ``limit`` of ``objects`` (in their order) after the one with id ``after``."""
    if after is not None:
        ids = [o["id"] for o in objects]
        objects = objects[ids.index(after) + 1 :] if after in ids else []
    page = objects[:limit]
    return {
        "object": "list",
        "data": page,
        "first_id": page[0]["id"] if page else None,
        "last_id": page[-1]["id"] if page else None,
        "has_more": len(objects) > limit,
    }


def _load(folder: Path, object_id: str, what: str) -> dict[str, Any]:
    if not object_id.replace("-", "_").replace("_", "").isalnum():
        raise BatchError(f"No such {what}: {object_id!r}", status=404, kind="not_found_error")
    path = folder / f"{object_id}.json"
    if not path.is_file():
        raise BatchError(f"No such {what}: {object_id!r}", status=404, kind="not_found_error")
    return json.loads(path.read_text())


def parse_requests(data: bytes, endpoint: str, limit: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(requests, errors) of a batch input file: one JSON object a line with a unique ``custom_id``, ``method``
    POST, ``url`` the batch's endpoint and a ``body`` object; every problem names its line."""
    requests, errors, seen = [], [], set()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return [], [{"code": "invalid_file", "message": "the file is not UTF-8 text", "line": None, "param": None}]
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        problem = None
        try:
            row = json.loads(line)
        except ValueError:
            row, problem = None, "not a JSON object"
        if problem is None and not isinstance(row, dict):
            problem = "not a JSON object"
        elif problem is None:
            custom_id = row.get("custom_id")
            if not isinstance(custom_id, str) or not custom_id:
                problem = "custom_id must be a non-empty string"
            elif custom_id in seen:
                problem = f"custom_id {custom_id!r} is not unique"
            elif row.get("method") != "POST":
                problem = "method must be POST"
            elif row.get("url") != endpoint:
                problem = f"url must be the batch's endpoint {endpoint}"
            elif not isinstance(row.get("body"), dict):
                problem = "body must be a JSON object"
            elif row["body"].get("stream"):
                problem = "stream is not allowed in a batch"
        if problem is not None:
            errors.append({"code": "invalid_request", "message": problem, "line": number, "param": None})
            continue
        seen.add(row["custom_id"])
        requests.append(row)
    if not requests and not errors:
        errors.append({"code": "empty_file", "message": "the file holds no requests", "line": None, "param": None})
    if len(requests) > limit:
        errors.append(
            {"code": "too_many_requests", "message": f"more than {limit} requests", "line": None, "param": None}
        )
    return requests, errors


Answer = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]  # (endpoint, body) -> the response body


class BatchRunner:
    """Runs the store's unfinished batches, one request at a time through ``answer`` while ``busy()`` says
    interactive requests are running, else up to ``width`` at once."""

    def __init__(self, store: BatchStore, answer: Answer, busy: Callable[[], bool], width: int):
        self.store, self.answer, self.busy, self.width = store, answer, busy, width
        self.wake = asyncio.Event()

    async def run_forever(self) -> None:
        while True:
            for path in sorted(self.store.batches_dir.glob("batch_*.json")):
                batch = json.loads(path.read_text())
                if batch["status"] not in DONE:
                    await self.run(batch["id"])
            self.store.sweep()
            self.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout=60)

    async def run(self, batch_id: str) -> dict[str, Any]:
        """Run one batch to its end: validate, answer what isn't answered yet, write its files."""
        store = self.store
        batch = store.batch(batch_id)
        requests, errors = parse_requests(
            store.content(batch["input_file_id"]), batch["endpoint"], store.settings.max_requests
        )
        if errors:
            batch["errors"] = {"object": "list", "data": errors}
            batch["status"], batch["failed_at"] = "failed", int(store.clock())
            store.save(batch)
            return batch
        order = [r["custom_id"] for r in requests]
        if batch["status"] == "validating":
            batch["status"], batch["in_progress_at"] = "in_progress", int(store.clock())
            batch["request_counts"]["total"] = len(order)
            store.save(batch)
        todo = [r for r in requests if r["custom_id"] not in store.results(batch_id)]
        outcome = await self._answer_all(batch_id, todo)
        if outcome != "in_progress":
            return store.finish(store.batch(batch_id), order, outcome)
        batch = store.batch(batch_id)
        batch["status"], batch["finalizing_at"] = "finalizing", int(store.clock())
        store.save(batch)
        return store.finish(batch, order, "completed")

    async def _answer_all(self, batch_id: str, todo: list[dict[str, Any]]) -> str:
        """Answer ``todo``, results appended as they come; "cancelled" or "expired" when the batch stops first."""
        running: set[asyncio.Task] = set()
        for request in todo:
            stop = self._stopped(batch_id)
            if stop:
                break
            while running and len(running) >= (1 if self.busy() else self.width):
                _, running = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED, timeout=0.05)
            running.add(asyncio.ensure_future(self._one(batch_id, request)))
        if running:
            await asyncio.wait(running)
        return self._stopped(batch_id) or "in_progress"

    def _stopped(self, batch_id: str) -> str | None:
        batch = self.store.batch(batch_id)
        if batch["status"] == "cancelling":
            return "cancelled"
        if self.store.clock() > batch["expires_at"]:
            return "expired"
        return None

    async def _one(self, batch_id: str, request: dict[str, Any]) -> None:
        request_id = "req_" + secrets.token_hex(8)
        try:
            body = await self.answer(request["url"], request["body"])
            response = {"status_code": 200, "request_id": request_id, "body": body}
        except BatchRequestFailed as exc:
            response = {"status_code": exc.status, "request_id": request_id, "body": {"error": exc.error}}
        row = {"id": "batch_req_" + secrets.token_hex(8), "custom_id": request["custom_id"], "response": response}
        self.store.append_result(batch_id, {**row, "error": None})


class BatchRequestFailed(Exception):
    """One request of a batch failed as its endpoint answers it: ``status`` and the error object."""

    def __init__(self, status: int, error: dict[str, Any]):
        super().__init__(error.get("message", ""))
        self.status, self.error = status, error
