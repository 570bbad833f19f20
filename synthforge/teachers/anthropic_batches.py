"""Anthropic's Message Batches API (``/v1/messages/batches``) as a
:class:`~synthforge.teachers.batch_api.BatchProvider`.

A batch is created with its requests inline (``{"requests": [{"custom_id", "params"}]}``); it is
``in_progress``, ``canceling`` or ``ended``; its results (``succeeded``, ``errored``, ``canceled``, ``expired``)
are read as JSONL once it ended; an ended batch can be deleted.

**What the API allows for exactly once.** A batch carries no metadata, so an intent whose batch was created but
not yet recorded (a kill in that window) is found again by listing the batches created since the intent (newest
first) for one with the intent's request count that no other intent claims; its results' custom_ids confirm it
(each is the hash of the stage scope and the request, so another client's batch can't pass for ours: one that
doesn't match is closed as foreign and its requests are sent again). The window that remains: a batch created by
another client of the same workspace, with the same request count, in the same seconds, is waited for before its
results show it isn't ours (time lost, never a wrong answer); and a batch the list doesn't show yet (or beyond
the pages looked through) is not found, so that intent's requests go out a second time.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from synthforge.teachers.batch_api import FIND_SLACK_S, BatchState, Intent, Record
from synthforge.teachers.http import JsonClient, StatusError

PATH = "/v1/messages/batches"
LIST_PAGES = 10  # pages of 100 looked through at most when finding a batch
# An errored result's error type, as the HTTP status the online API answers with (whether a retry can help).
ERROR_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "overloaded_error": 529,
}


class AnthropicBatches:
    """Message batches of the server behind ``client`` (the host, as the Messages API is reached)."""

    def __init__(self, client: JsonClient):
        self.client = client

    def line(self, cid: str, body: dict[str, Any], endpoint: str) -> dict[str, Any]:
        return {"custom_id": cid, "params": body}

    async def submit(self, intent: Intent, data: bytes, record: Record) -> str:
        content = b'{"requests":[' + b",".join(line for line in data.splitlines() if line.strip()) + b"]}"
        headers = {"content-type": "application/json"}
        return (await self.client.send("POST", PATH, unsure=False, content=content, headers=headers))["id"]

    async def find(self, intent: Intent, claimed: set[str]) -> str | None:
        """The newest batch created since the intent with its request count, not claimed by another intent."""
        after = None
        for _ in range(LIST_PAGES):
            page = await self.client.send("GET", PATH, params={"limit": 100, **({"after_id": after} if after else {})})
            for batch in page.get("data", []):
                if _epoch(batch.get("created_at")) < intent.at - FIND_SLACK_S:
                    return None
                if batch["id"] not in claimed and sum((batch.get("request_counts") or {}).values()) == len(intent.ids):
                    return batch["id"]
            if not page.get("has_more") or not page.get("data"):
                return None
            after = page.get("last_id") or page["data"][-1]["id"]
        return None

    async def resubmit(self, intent: Intent, record: Record) -> str | None:
        return None  # nothing is uploaded before the create: an intent without a batch reached nothing

    async def state(self, batch_id: str) -> BatchState:
        batch = await self.client.send("GET", f"{PATH}/{batch_id}")
        counts = batch.get("request_counts") or {}
        done = sum(counts.get(k, 0) for k in ("succeeded", "errored", "canceled", "expired"))
        status = batch["processing_status"]
        return BatchState(batch_id, status, status != "ended", done, done + counts.get("processing", 0), batch)

    async def results(self, state: BatchState) -> dict[str, dict[str, Any]]:
        if not state.raw.get("results_url"):
            return {}
        data = await self.client.send("GET", f"{PATH}/{state.id}/results", raw=True)
        found: dict[str, dict[str, Any]] = {}
        for line in data.decode("utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                answer = _answer(row.get("result") or {})
                if answer is not None:
                    found[row["custom_id"]] = answer
        return found

    async def cancel(self, batch_id: str) -> None:
        await self.client.post(f"{PATH}/{batch_id}/cancel", {})

    async def release(self, intent: Intent, state: BatchState | None) -> None:
        """An ended batch deleted with its results (one still canceling can't be: it is left)."""
        if state is None or state.running:
            return
        try:
            await self.client.send("DELETE", f"{PATH}/{state.id}")
        except StatusError as exc:
            if exc.status_code != 404:
                raise


def _answer(result: dict[str, Any]) -> dict[str, Any] | None:
    """One result as ``{"status_code", "body"}``: a message, or an error with the status it would have online;
    None for a request canceled or expired before an answer (sent again)."""
    if result.get("type") == "succeeded":
        return {"status_code": 200, "body": result.get("message")}
    if result.get("type") == "errored":
        error = (result.get("error") or {}).get("error") or {}
        return {"status_code": ERROR_STATUS.get(error.get("type"), 500), "body": {"error": error}}
    return None


def _epoch(stamp: Any) -> float:
    """An RFC 3339 time (``2024-08-20T18:37:24.100435Z``) in seconds since the epoch (0 when it isn't one)."""
    try:
        return datetime.fromisoformat(str(stamp).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0
