"""OpenAI's Batch API as the way a teacher's requests are sent (``teacher.openai.batch: true``): half the price on
hosted APIs, the same answers.

Requests that arrive together (the engine's batches in flight, within ``wait_s``) go out as one batch file,
split by request count and bytes (OpenAI's 50,000 requests and 200 MB by default) and, when ``max_tokens`` is
set, by estimated prompt tokens (a provider's enqueued-token limit): counted by the local tokenizer where one is
set, else estimated from the request's bytes at ``bytes_per_token``. Each request's ``custom_id``
is the hash of its body, so the same request always has the same id, whichever batch carries it.

**Exactly once, by the server's own record.** Every batch we create carries ``metadata: {synthforge: TAG}``.
Before sending anything, the client lists the server's batches with that tag: a finished one's results are
downloaded and reused by ``custom_id``; one still running is waited for (its input file says which requests it
carries); only requests no batch carries are sent. So a client killed at any point (before the upload, between
the upload and the create, after the create, while polling, while downloading) never creates a second batch for
the same work, and never loses a finished result: a rerun finds them. (An upload whose batch was never created is
left on the server, unused.) An expired or cancelled batch's finished requests are kept; the others are sent again.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from synthforge.hashing import stable_hash
from synthforge.teachers.http import JsonClient

RUNNING = ("validating", "in_progress", "finalizing", "cancelling")
LIST_PAGES = 20  # pages of 100 batches looked through at most when reconciling
MAX_SENDS = 3  # batches one request is sent in before it is given up


@dataclass(frozen=True)
class BatchLimits:
    """How batch files are split and how often a batch is polled."""

    max_requests: int = 50_000
    max_bytes: int = 200 << 20
    max_tokens: int | None = None  # estimated prompt tokens in one batch at most (None: no such limit)
    bytes_per_token: float = 4.0  # the estimate without a tokenizer: a request's message bytes per token
    wait_s: float = 1.0  # requests arriving within this go out in one batch
    poll_s: float = 5.0  # first poll interval; it grows by half each time, to at most a minute
    tag: str = "synthforge"  # metadata value that marks this client's batches


def custom_id(body: dict[str, Any]) -> str:
    """A request's id in any batch: the hash of its body (at most 64 characters of [A-Za-z0-9_-])."""
    return "sf-" + stable_hash(body)[:40]


def retryable(status: Any) -> bool:
    """Whether a failed request's status says another try may help (as the SDK retries)."""
    return isinstance(status, int) and (status in (408, 409, 429) or status >= 500)


def split(
    rows: list[tuple[str, bytes]], limits: BatchLimits, tokens: Callable[[bytes], int] | None = None
) -> list[list[tuple[str, bytes]]]:
    """Consecutive groups of (custom_id, line) within the request, byte and (with ``limits.max_tokens``) token
    limits; ``tokens`` counts a line's prompt tokens (default: :func:`estimated_tokens`)."""
    count = tokens or (lambda line: estimated_tokens(line, limits.bytes_per_token))
    groups: list[list[tuple[str, bytes]]] = [[]]
    size = used = 0
    for row in rows:
        need = count(row[1]) if limits.max_tokens else 0
        full = len(groups[-1]) >= limits.max_requests or size + len(row[1]) > limits.max_bytes
        if groups[-1] and (full or (limits.max_tokens and used + need > limits.max_tokens)):
            groups.append([])
            size = used = 0
        groups[-1].append(row)
        size, used = size + len(row[1]), used + need
    return [g for g in groups if g]


def estimated_tokens(line: bytes, bytes_per_token: float) -> int:
    """A request line's prompt tokens estimated from its messages' UTF-8 bytes (at least 1)."""
    messages = json.loads(line)["body"].get("messages", [])
    text = "".join(
        m["content"] if isinstance(m.get("content"), str) else json.dumps(m.get("content")) for m in messages
    )
    return max(1, round(len(text.encode()) / bytes_per_token))


class BatchClient:
    """Sends requests through the Batch API of the server behind ``client``; runs on the teacher's event loop."""

    def __init__(
        self,
        client: JsonClient,
        limits: BatchLimits,
        say: Callable[[str], None] | None = None,
        tokens: Callable[[bytes], int] | None = None,
    ):
        """``tokens``: a request line's prompt tokens by a local tokenizer (None: estimated from its bytes)."""
        self.client, self.limits, self.tokens = client, limits, tokens
        self.say = say or (lambda line: print(line, file=sys.stderr))
        self.done: dict[str, dict[str, Any]] = {}  # custom_id -> the result line's response
        self.carried: dict[str, Following] = {}  # custom_id -> the running batch that carries it
        self.sent: dict[str, int] = {}  # custom_id -> batches it was sent in by this client
        self._queue: list[tuple[str, dict[str, Any], str]] = []  # (custom_id, body, endpoint) waiting to go out
        self._flush: asyncio.Task | None = None
        self._reconciled: asyncio.Future | None = None

    async def answers(self, endpoint: str, bodies: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Each body's response (``status_code``, ``body``), from a batch found on the server or sent now."""
        await self._reconcile()
        ids = [custom_id(b) for b in bodies]
        while missing := [(cid, body) for cid, body in zip(ids, bodies, strict=True) if cid not in self.done]:
            for cid, body in missing:
                if cid not in self.carried and all(q[0] != cid for q in self._queue):
                    self.sent[cid] = self.sent.get(cid, 0) + 1
                    if self.sent[cid] > MAX_SENDS:
                        raise BatchEnded("unanswered", 1, f"request {cid} was sent in {MAX_SENDS} batches")
                    self._queue.append((cid, body, endpoint))
            if self._queue and self._flush is None:
                self._flush = asyncio.ensure_future(self._send_queued())
            waiting = {self.carried[cid].ended for cid, _ in missing if cid in self.carried}
            waiting |= {self._flush} if self._flush is not None else set()
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            for done in [w for w in waiting if w.done() and not w.cancelled() and w.exception() is not None]:
                if not self._refollow(done):
                    self._reconciled = None  # a create that failed may have made a batch: look before resending
                raise done.exception()  # a poll that failed is followed again: the batch is never sent twice
        return [self.done[cid] for cid in ids]

    def _refollow(self, ended: asyncio.Future) -> bool:
        """Follow again the batch whose poll ended in an error; False when ``ended`` followed none."""
        following = next((f for f in self.carried.values() if f.ended is ended), None)
        if following is not None:
            self._follow(following.batch_id, following.ids)
        return following is not None

    async def ours(self, running_only: bool = True) -> list[dict[str, Any]]:
        """The server's batches with our tag (those still running, by default), newest first."""
        found, after = [], None
        for _ in range(LIST_PAGES):
            params = {"limit": 100, **({"after": after} if after else {})}
            page = await self.client.send("GET", "/batches", params=params)
            for batch in page.get("data", []):
                ours = (batch.get("metadata") or {}).get("synthforge") == self.limits.tag
                if ours and (not running_only or batch["status"] in RUNNING):
                    found.append(batch)
            if not page.get("has_more"):
                break
            after = page.get("last_id")
        return found

    async def cancel_running(self) -> list[dict[str, Any]]:
        """Cancel our running batches (they keep what they finished)."""
        return [await self.client.post(f"/batches/{b['id']}/cancel", {}) for b in await self.ours()]

    async def forget(self) -> int:
        """A fresh start: our running batches cancelled, and no earlier result reused."""
        cancelled = await self.cancel_running()
        self._reconciled = asyncio.get_running_loop().create_future()
        self._reconciled.set_result(None)  # nothing is taken from the server's earlier batches
        self.done.clear()
        self.carried.clear()
        self.say(f"synthforge: fresh run: {len(cancelled)} running batch(es) cancelled, no earlier result reused")
        return len(cancelled)

    async def aclose(self) -> None:
        """Stop following batches (they go on on the server: a new client finds them) and sending queued ones."""
        tasks = {f.ended for f in self.carried.values()} | ({self._flush} if self._flush is not None else set())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- what the server already has ---------------------------------------------------------------------
    async def _reconcile(self) -> None:
        """Once: the server's batches with our tag, finished ones' results taken, running ones waited for."""
        if self._reconciled is None:
            self._reconciled = asyncio.ensure_future(self._read_server())
        await self._reconciled

    async def _read_server(self) -> None:
        for batch in await self.ours(running_only=False):
            if batch["status"] in RUNNING:
                self._follow(batch["id"], await self._carried_ids(batch))
            else:
                await self._take_results(batch)

    async def _carried_ids(self, batch: dict[str, Any]) -> list[str]:
        data = await self.client.send("GET", f"/files/{batch['input_file_id']}/content", raw=True)
        return [json.loads(line)["custom_id"] for line in data.decode("utf-8").splitlines() if line.strip()]

    async def _take_results(self, batch: dict[str, Any]) -> None:
        """A finished (or cancelled, expired) batch's answered requests; failed lines count as answered too
        (their status says whether a retry can help: the teacher decides)."""
        for key in ("output_file_id", "error_file_id"):
            if batch.get(key):
                data = await self.client.send("GET", f"/files/{batch[key]}/content", raw=True)
                for line in data.decode("utf-8").splitlines():
                    if line.strip():
                        row = json.loads(line)
                        response = row.get("response") or {"status_code": 500, "body": {"error": row.get("error")}}
                        if not retryable(response.get("status_code")):  # a retryable failure is sent again
                            self.done.setdefault(row["custom_id"], response)

    # -- sending and following ---------------------------------------------------------------------------
    async def _send_queued(self) -> None:
        await asyncio.sleep(self.limits.wait_s)
        queued, self._queue = self._queue, []
        self._flush = None
        by_endpoint: dict[str, list[tuple[str, bytes]]] = {}
        for cid, body, endpoint in queued:
            line = {"custom_id": cid, "method": "POST", "url": endpoint, "body": body}
            by_endpoint.setdefault(endpoint, []).append((cid, (json.dumps(line, ensure_ascii=False) + "\n").encode()))
        for endpoint, rows in by_endpoint.items():
            for group in split(rows, self.limits, self.tokens):
                await self._create(endpoint, group)

    async def _create(self, endpoint: str, rows: list[tuple[str, bytes]]) -> None:
        uploaded = await self.client.send(
            "POST", "/files", files={"file": ("batch.jsonl", b"".join(r[1] for r in rows))}, data={"purpose": "batch"}
        )
        batch = await self.client.post(
            "/batches",
            {
                "input_file_id": uploaded["id"],
                "endpoint": endpoint,
                "completion_window": "24h",
                "metadata": {"synthforge": self.limits.tag},
            },
        )
        self.say(f"synthforge: batch {batch['id']}: {len(rows)} requests sent ({endpoint})")
        self._follow(batch["id"], [cid for cid, _ in rows])

    def _follow(self, batch_id: str, ids: list[str]) -> None:
        following = Following(batch_id, ids, asyncio.ensure_future(self._poll(batch_id, ids)))
        for cid in ids:
            self.carried[cid] = following

    async def _poll(self, batch_id: str, ids: list[str]) -> None:
        wait, last = self.limits.poll_s, None
        while True:
            batch = await self.client.send("GET", f"/batches/{batch_id}")
            counts = batch.get("request_counts") or {}
            state = f"{batch['status']} {counts.get('completed', 0)}/{counts.get('total', 0)}"
            if state != last:
                self.say(f"synthforge: batch {batch_id}: {state}")
                last = state
            if batch["status"] not in RUNNING:
                break
            await asyncio.sleep(wait)
            wait = min(60.0, wait * 1.5)
        await self._take_results(batch)
        unfinished = [cid for cid in ids if cid not in self.done]
        for cid in ids:
            if cid in self.carried and self.carried[cid].batch_id == batch_id:
                del self.carried[cid]
        if unfinished:  # expired, cancelled or failed: what it didn't answer goes out again
            self.say(f"synthforge: batch {batch_id} ended {batch['status']}: {len(unfinished)} requests sent again")


@dataclass
class Following:
    """A running batch this client waits for: its id, the requests it carries, and its end."""

    batch_id: str
    ids: list[str]
    ended: asyncio.Future


class BatchEnded(Exception):
    """Requests no batch could answer (sent ``MAX_SENDS`` times without an answer)."""

    def __init__(self, status: str, unfinished: int, message: str = ""):
        super().__init__(message or f"a batch ended {status} with {unfinished} requests unanswered")
        self.status, self.unfinished = status, unfinished
