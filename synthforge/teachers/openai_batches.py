"""OpenAI's Batch API (``/v1/files``, ``/v1/batches``) as a :class:`~synthforge.teachers.batch_api.BatchProvider`:
a batch's requests are uploaded as a JSONL file named after the intent, and the batch carries the intent id in its
metadata (the idempotency key), so a batch or an upload made just before a kill is found again by it."""

from __future__ import annotations

import json
from typing import Any

from synthforge.teachers.batch_api import FIND_SLACK_S, BatchState, Intent, Record
from synthforge.teachers.http import JsonClient, StatusError

RUNNING = ("validating", "in_progress", "finalizing", "cancelling")
LIST_PAGES = 20  # pages of 100 looked through at most when finding a batch or an upload
INTENT_KEY = "synthforge_intent"  # the metadata key carrying the intent id


class OpenAIBatches:
    """Batches of an OpenAI-compatible server (``client`` speaks to its ``/v1``); ``tag`` marks ours in metadata."""

    def __init__(self, client: JsonClient, tag: str = "synthforge"):
        self.client, self.tag = client, tag

    def line(self, cid: str, body: dict[str, Any], endpoint: str) -> dict[str, Any]:
        return {"custom_id": cid, "method": "POST", "url": endpoint, "body": body}

    async def submit(self, intent: Intent, data: bytes, record: Record) -> str:
        uploaded = await self.client.send(
            "POST", "/files", files={"file": (_upload_name(intent), data)}, data={"purpose": "batch"}
        )
        record("uploaded", {"file": uploaded["id"]})
        return await self._create(intent, uploaded["id"])

    async def _create(self, intent: Intent, file_id: str) -> str:
        metadata = {"synthforge": self.tag, INTENT_KEY: intent.id}
        body = {"input_file_id": file_id, "endpoint": intent.endpoint, "completion_window": "24h", "metadata": metadata}
        content = json.dumps(body).encode()
        headers = {"content-type": "application/json"}
        return (await self.client.send("POST", "/batches", unsure=False, content=content, headers=headers))["id"]

    async def find(self, intent: Intent, claimed: set[str]) -> str | None:
        """The batch whose metadata carries the intent id, among those created since the intent."""
        async for batch in self._listed("/batches", {}, intent.at):
            if (batch.get("metadata") or {}).get(INTENT_KEY) == intent.id and batch["id"] not in claimed:
                return batch["id"]
        return None

    async def resubmit(self, intent: Intent, record: Record) -> str | None:
        """A batch made from the intent's upload: recorded, or found by its name (a kill before its record)."""
        file_id = intent.file
        if file_id is None:
            async for found in self._listed("/files", {"purpose": "batch"}, intent.at):
                if found.get("filename") == _upload_name(intent):
                    file_id = found["id"]
                    record("uploaded", {"file": file_id})
                    break
        return await self._create(intent, file_id) if file_id is not None else None

    async def _listed(self, path: str, params: dict[str, Any], since: float):
        """Objects of a list route, newest first, until those created well before ``since``."""
        after = None
        for _ in range(LIST_PAGES):
            cursor = {"after": after} if after else {}
            page = await self.client.send("GET", path, params={"limit": 100, **params, **cursor})
            for item in page.get("data", []):
                if item.get("created_at", since) < since - FIND_SLACK_S:
                    return
                yield item
            if not page.get("has_more") or not page.get("data"):
                return
            after = page["data"][-1]["id"]

    async def state(self, batch_id: str) -> BatchState:
        batch = await self.client.send("GET", f"/batches/{batch_id}")
        counts = batch.get("request_counts") or {}
        done = counts.get("completed", 0) + counts.get("failed", 0)
        running = batch["status"] in RUNNING
        return BatchState(batch_id, batch["status"], running, done, counts.get("total", 0), batch)

    async def results(self, state: BatchState) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        for key in ("output_file_id", "error_file_id"):
            if state.raw.get(key):
                data = await self.client.send("GET", f"/files/{state.raw[key]}/content", raw=True)
                for line in data.decode("utf-8").splitlines():
                    if line.strip():
                        row = json.loads(line)
                        error = {"status_code": 500, "body": {"error": row.get("error")}}
                        found[row["custom_id"]] = row.get("response") or error
        return found

    async def cancel(self, batch_id: str) -> None:
        await self.client.post(f"/batches/{batch_id}/cancel", {})

    async def release(self, intent: Intent, state: BatchState | None) -> None:
        """The input file, and an ended batch's output and error files, deleted (one already gone is fine; the
        input of a batch still cancelling is left: the server keeps it until the batch ends)."""
        files = [intent.file] + ([state.raw.get("output_file_id"), state.raw.get("error_file_id")] if state else [])
        for file_id in [f for f in files if f]:
            try:
                await self.client.send("DELETE", f"/files/{file_id}")
            except StatusError as exc:
                if exc.status_code not in (404, 409):
                    raise


def _upload_name(intent: Intent) -> str:
    return f"synthforge-{intent.id}.jsonl"
