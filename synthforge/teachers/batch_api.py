"""Batch APIs as the way a teacher's requests are sent (``teacher.openai.batch`` or ``teacher.anthropic.batch``):
half the price on hosted APIs, the same answers.

Requests that arrive together (the engine's batches in flight, within ``wait_s``) go out as one batch per stage
scope, split by request count and bytes (the provider's limits) and, when ``max_tokens`` is set, by estimated
prompt tokens (a provider's enqueued-token limit): counted by the local tokenizer where one is set, else estimated
from the request's bytes at ``bytes_per_token``. Each request's ``custom_id`` is the hash of its scope (the stage
and its settings) and its body (made from the record), so the same request always has the same id.

**Exactly once: a write-ahead intent log, then the server's list.** Before anything reaches the server the client
records an *intent* in the run's batch log (kept by the engine with the checkpoints, see
:class:`~synthforge.teachers.base.BatchJournal`): its id, scope, endpoint, the custom_ids it carries and the time.
Then each step as it happens: the upload (its file id), the create (the batch id), the end, the release. On
resume, every open intent is settled before anything new is sent:

- its batch is recorded: followed while it runs, its results taken once it ended;
- it isn't (killed between the create and its record): the server's batches created since the intent are listed
  for it (the provider's :meth:`BatchProvider.find`: OpenAI's batch metadata carries the intent id, the idempotency
  key; Anthropic's batches have no metadata: the request count, then the custom_ids of its results confirm it);
- none is found: an upload made for it (recorded, or found by its name) becomes the batch; else nothing reached the
  server, and its requests are sent again when asked.

So a client killed at any point (before the upload, between the upload and the create, after the create, while
polling, while downloading) never creates a second batch for the same work and never loses a finished result. An
expired or cancelled batch's finished requests are kept; the others are sent again. A failed line is answered
only when a retry can't help (a retryable one is sent again, :data:`MAX_SENDS` times at most).
"""

from __future__ import annotations

import asyncio
import json
import math
import secrets
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from synthforge.hashing import stable_hash
from synthforge.teachers.base import BatchJournal
from synthforge.teachers.http import StatusError

MAX_SENDS = 3  # batches one request is sent in before it is given up
FIND_SLACK_S = 600.0  # batches created this long before an intent are still looked at (clocks differ)
Record = Callable[[str, dict[str, Any]], None]  # (step, its fields): what a provider reports of an intent


@dataclass(frozen=True)
class BatchLimits:
    """How batch files are split and how often a batch is polled."""

    max_requests: int = 50_000
    max_bytes: int = 200 << 20
    max_tokens: int | None = None  # estimated prompt tokens in one batch at most (None: no such limit)
    bytes_per_token: float = 4.0  # the estimate without a tokenizer: a request's message bytes per token
    wait_s: float = 1.0  # requests arriving within this go out in one batch
    poll_s: float = 5.0  # first poll interval; it grows by half each time, to at most a minute


@dataclass
class Intent:
    """One batch submission as the run's log has it: recorded before anything is sent, then each step."""

    id: str
    scope: str
    endpoint: str
    ids: list[str]
    at: float  # when it was recorded (the server's batches created before it can't be its batch)
    file: str | None = None  # the uploaded input file (providers with files)
    batch: str | None = None  # the batch made for it
    status: str | None = None  # how the batch ended (None: running, or never made)
    closed: str | None = None  # "released", "discarded" or "lost" (nothing reached the server)
    foreign: list[str] = field(default_factory=list)  # batches found for it whose results showed another client's


@dataclass(frozen=True)
class BatchState:
    """A batch as the server reports it, read the same way for every provider."""

    id: str
    status: str  # the provider's own word (validating, in_progress, finalizing, completed, ended, ...)
    running: bool
    done: int  # requests finished (answered or failed)
    total: int
    raw: dict[str, Any] = field(default_factory=dict)  # the server's object


class BatchProvider(Protocol):
    """One batch API's shapes: how a request line looks, and how batches are sent, found, read and released."""

    def line(self, cid: str, body: dict[str, Any], endpoint: str) -> dict[str, Any]:
        """The request line carrying ``body`` under ``cid``."""
        ...

    async def submit(self, intent: Intent, data: bytes, record: Record) -> str:
        """Send ``data`` (the intent's request lines) as a batch tagged with the intent's id where the API allows;
        the batch's id. Steps before the create (an upload) are reported through ``record``."""
        ...

    async def find(self, intent: Intent, claimed: set[str]) -> str | None:
        """The id of a batch on the server made for ``intent`` and not in ``claimed`` (None: none)."""
        ...

    async def resubmit(self, intent: Intent, record: Record) -> str | None:
        """A batch made from what already reached the server for ``intent`` (an upload), or None."""
        ...

    async def state(self, batch_id: str) -> BatchState: ...

    async def results(self, state: BatchState) -> dict[str, dict[str, Any]]:
        """An ended batch's answers by custom_id, each ``{"status_code", "body"}``; requests cancelled or expired
        before an answer are left out."""
        ...

    async def cancel(self, batch_id: str) -> None: ...

    async def release(self, intent: Intent, state: BatchState | None) -> None:
        """Delete what the intent left on the server (its upload, result files, the ended batch)."""
        ...


def limits_of(settings: Any) -> BatchLimits:
    """The limits a backend's settings give (its ``batch_*`` fields), each checked (a ValueError naming it)."""
    if settings.batch_max_requests < 1:
        raise ValueError("batch_max_requests must be >= 1")
    for name in ("batch_max_mb", "batch_bytes_per_token", "batch_poll_s"):
        value = getattr(settings, name)
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    if settings.batch_max_tokens is not None and settings.batch_max_tokens < 1:
        raise ValueError("batch_max_tokens must be >= 1")
    return BatchLimits(
        settings.batch_max_requests,
        int(settings.batch_max_mb * (1 << 20)),
        settings.batch_max_tokens,
        settings.batch_bytes_per_token,
        poll_s=settings.batch_poll_s,
    )


def custom_id(key: Any, scope: str = "") -> str:
    """A request's id in any batch: the hash of its scope and key (its body, or what tells two samples of one body
    apart), at most 64 characters of [A-Za-z0-9_-]."""
    return "sf-" + stable_hash([scope, key] if scope else key)[:40]


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


def request_messages(line: bytes) -> tuple[list[dict[str, Any]], Any]:
    """A request line's messages and system prompt (OpenAI's ``body`` or Anthropic's ``params``)."""
    row = json.loads(line)
    body = row.get("body") or row.get("params") or {}
    return body.get("messages", []), body.get("system")


def estimated_tokens(line: bytes, bytes_per_token: float) -> int:
    """A request line's prompt tokens estimated from its messages' (and system prompt's) UTF-8 bytes (at least 1)."""
    messages, system = request_messages(line)
    parts = [m.get("content") for m in messages] + ([system] if system else [])
    text = "".join(p if isinstance(p, str) else json.dumps(p) for p in parts)
    return max(1, round(len(text.encode()) / bytes_per_token))


class MemoryJournal:
    """A :class:`BatchJournal` kept in memory: a teacher used outside a run (nothing survives the process); a
    batch's states are said on stderr."""

    def __init__(self) -> None:
        self._events: list[dict[str, Any]] = []

    def events(self) -> list[dict[str, Any]]:
        return list(self._events)

    def record(self, event: dict[str, Any]) -> None:
        self._events.append(dict(event))

    def shown(self, state: BatchState) -> None:
        self.say(state_line(state))

    def say(self, line: str) -> None:
        print(line, file=sys.stderr, flush=True)


def state_line(state: BatchState) -> str:
    """A batch's state in one line: ``synthforge: batch ID: in_progress 3/24``."""
    return f"synthforge: batch {state.id}: {state.status} {state.done}/{state.total}"


def replay(events: list[dict[str, Any]]) -> dict[str, Intent]:
    """The intents a log's events describe, in the order they were made."""
    intents: dict[str, Intent] = {}
    for event in events:
        step, key = event.get("step"), event.get("intent")
        if step == "intent":
            fields = ("scope", "endpoint", "ids", "at")
            intents[key] = Intent(key, *(event[f] for f in fields))
        elif key in intents:
            apply(intents[key], step, event)
    return intents


def open_intents(journal: BatchJournal) -> list[Intent]:
    """The intents a journal recorded that are not closed yet."""
    return [i for i in replay(journal.events()).values() if i.closed is None]


def apply(intent: Intent, step: str, event: dict[str, Any]) -> None:
    """One recorded step's effect on its intent."""
    if step == "uploaded":
        intent.file = event["file"]
    elif step == "created":
        intent.batch = event["batch"]
    elif step == "ended":
        intent.status = event["status"]
    elif step == "foreign":
        intent.foreign.append(event["batch"])
        intent.batch = intent.status = None
    elif step in ("released", "discarded", "lost"):
        intent.closed = step


class BatchClient:
    """Sends requests through a provider's batch API, keeping each submission in a :class:`BatchJournal`; runs on
    the teacher's event loop."""

    def __init__(
        self,
        provider: BatchProvider,
        limits: BatchLimits,
        tokens: Callable[[bytes], int] | None = None,
    ):
        """``tokens``: a request line's prompt tokens by a local tokenizer (None: estimated from its bytes). What
        it has to say goes to its journal (the run's log, or stderr outside a run)."""
        self.provider, self.limits, self.tokens = provider, limits, tokens
        self.journal: BatchJournal = MemoryJournal()
        self.intents: dict[str, Intent] = {}
        self.done: dict[str, dict[str, Any]] = {}  # custom_id -> its answer
        self.carried: dict[str, Following] = {}  # custom_id -> the running batch that carries it
        self.sent: dict[str, int] = {}  # custom_id -> batches it was sent in by this client
        self._queue: list[tuple[str, dict[str, Any], str, str]] = []  # (custom_id, body, endpoint, scope)
        self._flush: asyncio.Task | None = None
        self._settled: asyncio.Future | None = None

    def attach(self, journal: BatchJournal) -> None:
        """Keep submissions in ``journal`` (the run's log); what it recorded is settled before the next send."""
        self.journal, self.intents = journal, replay(journal.events())
        self._settled = None

    def record(self, intent: Intent, step: str, **fields: Any) -> None:
        """Record one step of ``intent`` durably, then apply it."""
        event = {"step": step, "intent": intent.id, **fields}
        self.journal.record(event)
        apply(intent, step, event)

    def open_intents(self, scopes: frozenset[str] | None = None) -> list[Intent]:
        """Intents not yet closed (of ``scopes`` only, when given)."""
        return [i for i in self.intents.values() if i.closed is None and (scopes is None or i.scope in scopes)]

    async def answers(
        self, endpoint: str, bodies: list[dict[str, Any]], scope: str = "", keys: list[Any] | None = None
    ) -> list[dict[str, Any]]:
        """Each body's answer (``status_code``, ``body``), from a batch the log has, or sent now; ``keys`` tell
        equal bodies apart (samples of one prompt without a seed; default: the bodies)."""
        await self._settle()
        ids = [custom_id(k, scope) for k in (keys or bodies)]
        while missing := [(cid, body) for cid, body in zip(ids, bodies, strict=True) if cid not in self.done]:
            for cid, body in missing:
                if cid not in self.carried and all(q[0] != cid for q in self._queue):
                    self.sent[cid] = self.sent.get(cid, 0) + 1
                    if self.sent[cid] > MAX_SENDS:
                        raise BatchEnded("unanswered", 1, f"request {cid} was sent in {MAX_SENDS} batches")
                    self._queue.append((cid, body, endpoint, scope))
            if self._queue and self._flush is None:
                self._flush = asyncio.ensure_future(self._send_queued())
            waiting = {self.carried[cid].ended for cid, _ in missing if cid in self.carried}
            waiting |= {self._flush} if self._flush is not None else set()
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            for done in [w for w in waiting if w.done() and not w.cancelled() and w.exception() is not None]:
                self._refollow(done)  # a poll that failed is followed again: the batch is never sent twice
                self._settled = None  # a create that failed may have made a batch: the log is settled again
                raise done.exception()
        return [self.done[cid] for cid in ids]

    def _refollow(self, ended: asyncio.Future) -> None:
        following = next((f for f in self.carried.values() if f.ended is ended), None)
        if following is not None:
            self._follow(following.intent)

    # -- settling what the log recorded ----------------------------------------------------------------------
    async def _settle(self) -> None:
        """Settle the log once; a settling that failed (the server unreachable) is tried again on the next call."""
        failed = (
            self._settled is not None
            and self._settled.done()
            and (self._settled.cancelled() or self._settled.exception() is not None)
        )
        if self._settled is None or failed:
            self._settled = asyncio.ensure_future(self._resume())
        await self._settled

    async def _resume(self) -> None:
        """Every open intent settled: its batch followed or its results taken; none found, its upload sent."""
        for intent in self.open_intents():
            if not any(f.intent is intent for f in self.carried.values()):
                await self._resume_one(intent)

    async def _resume_one(self, intent: Intent) -> None:
        state = await self._state_of(intent, resubmit=True)
        if state is None:
            return
        if state.running:
            self._follow(intent)
        elif not await self._take(intent, state):
            await self._resume_one(intent)  # the batch found was another client's: look again

    async def located(self, intent: Intent, resubmit: bool = False) -> str | None:
        """The intent's batch: recorded, else found on the server (and recorded), else (with ``resubmit``) made
        from its upload; None when nothing reached the server (the intent is closed as lost)."""
        if intent.batch is None:
            claimed = {i.batch for i in self.intents.values() if i.batch} | set(intent.foreign)
            found = await self.provider.find(intent, claimed)
            if found is None and resubmit:
                found = await self.provider.resubmit(intent, lambda step, fields: self.record(intent, step, **fields))
            if found is None:
                if resubmit:
                    self.record(intent, "lost")
                return None
            self.record(intent, "created", batch=found, found=True)
            self.journal.say(f"synthforge: batch {found}: found again for intent {intent.id}")
        return intent.batch

    async def _take(self, intent: Intent, state: BatchState) -> bool:
        """An ended batch's answers; False when its custom_ids aren't the intent's: a batch found for it turned
        out to be another client's (recorded as foreign; the intent is looked for again)."""
        answers = await self.provider.results(state)
        if not set(answers) <= set(intent.ids):
            self.record(intent, "foreign", batch=state.id)
            self.journal.say(f"synthforge: batch {state.id} carries another client's requests: not taken")
            return False
        if intent.status is None:
            self.record(intent, "ended", status=state.status)
        for cid, answer in answers.items():
            if not retryable(answer.get("status_code")):  # a retryable failure is sent again
                self.done.setdefault(cid, answer)
        return True

    # -- sending and following -------------------------------------------------------------------------------
    async def _send_queued(self) -> None:
        await asyncio.sleep(self.limits.wait_s)
        queued, self._queue = self._queue, []
        self._flush = None
        groups: dict[tuple[str, str], list[tuple[str, bytes]]] = {}
        for cid, body, endpoint, scope in queued:
            line = json.dumps(self.provider.line(cid, body, endpoint), ensure_ascii=False) + "\n"
            groups.setdefault((endpoint, scope), []).append((cid, line.encode()))
        for (endpoint, scope), rows in groups.items():
            for group in split(rows, self.limits, self.tokens):
                await self._create(endpoint, scope, group)

    async def _create(self, endpoint: str, scope: str, rows: list[tuple[str, bytes]]) -> None:
        intent = Intent("in-" + secrets.token_hex(8), scope, endpoint, [cid for cid, _ in rows], time.time())
        self.intents[intent.id] = intent
        self.journal.record({"step": "intent", "intent": intent.id, **_fields(intent)})
        batch = await self.provider.submit(
            intent, b"".join(r[1] for r in rows), lambda step, fields: self.record(intent, step, **fields)
        )
        self.record(intent, "created", batch=batch)
        self.journal.say(f"synthforge: batch {batch}: {len(rows)} requests sent ({endpoint})")
        self._follow(intent)

    def _follow(self, intent: Intent) -> None:
        following = Following(intent, asyncio.ensure_future(self._poll(intent)))
        for cid in intent.ids:
            if cid not in self.done:
                self.carried[cid] = following

    async def _poll(self, intent: Intent) -> None:
        wait, last = self.limits.poll_s, None
        while True:
            state = await self.provider.state(intent.batch)
            if (state.status, state.done, state.total) != last:
                self.journal.shown(state)
                last = (state.status, state.done, state.total)
            if not state.running:
                break
            await asyncio.sleep(wait)
            wait = min(60.0, wait * 1.5)
        taken = await self._take(intent, state)
        if not taken:
            await self._resume_one(intent)  # followed again if its own batch is found, else its requests go out
        me = asyncio.current_task()
        for cid in intent.ids:
            if cid in self.carried and self.carried[cid].ended is me:
                del self.carried[cid]
        if taken and (unfinished := [cid for cid in intent.ids if cid not in self.done]):
            self.journal.say(f"synthforge: batch {state.id} ended {state.status}: {len(unfinished)} sent again")

    # -- listing, cancelling, releasing --------------------------------------------------------------------------
    async def running(self) -> list[BatchState]:
        """The log's batches still running on the server."""
        found = []
        for intent in self.open_intents():
            state = await self._state_of(intent) if intent.status is None else None
            if state is not None and state.running:
                found.append(state)
        return found

    async def cancel_running(self) -> list[BatchState]:
        """Cancel the log's running batches (they keep what they finished)."""
        running = await self.running()
        for state in running:
            await self.provider.cancel(state.id)
        return running

    async def discard(self, scopes: frozenset[str] | None = None) -> int:
        """Cancel and release the open intents (of ``scopes``, when given): their requests are no longer wanted.
        How many running batches were cancelled."""
        cancelled = 0
        for intent in self.open_intents(scopes):
            state = await self._state_of(intent)
            if intent.closed:  # its batch is gone from the server
                continue
            if state is not None and state.running:
                await self.provider.cancel(state.id)
                cancelled += 1
            await self.provider.release(intent, state)
            self.record(intent, "discarded")
        return cancelled

    async def release(self) -> int:
        """The run's results are saved: every open intent's batch cancelled if it still runs (nothing waits for
        it) and what it left on the server deleted. How many intents were released."""
        opened = self.open_intents()
        for intent in opened:
            state = await self._state_of(intent)
            if intent.closed:  # its batch is gone from the server
                continue
            if state is not None and state.running:
                await self.provider.cancel(state.id)
                state = await self.provider.state(state.id)
            await self.provider.release(intent, state)
            self.record(intent, "released")
        return len(opened)

    async def _state_of(self, intent: Intent, resubmit: bool = False) -> BatchState | None:
        """The intent's batch as the server reports it (see :meth:`located`); None when it has none, or its batch
        is gone from the server (past its retention, or another server): then closed as lost, its requests sent
        again when asked."""
        if await self.located(intent, resubmit) is None:
            return None
        try:
            return await self.provider.state(intent.batch)
        except StatusError as exc:
            if exc.status_code != 404:
                raise
        self.journal.say(f"synthforge: batch {intent.batch} is no longer on the server: its requests go out again")
        self.record(intent, "lost")
        return None

    async def forget(self) -> int:
        """A fresh start: the log's running batches cancelled, their uploads deleted, no earlier result reused."""
        cancelled = await self.discard()
        self._settled = asyncio.get_running_loop().create_future()
        self._settled.set_result(None)
        self.done.clear()
        self.carried.clear()
        self.journal.say(f"synthforge: fresh run: {cancelled} running batch(es) cancelled, no earlier result reused")
        return cancelled

    async def aclose(self) -> None:
        """Stop following batches (they go on on the server: the log finds them) and sending queued ones."""
        tasks = {f.ended for f in self.carried.values()} | ({self._flush} if self._flush is not None else set())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _fields(intent: Intent) -> dict[str, Any]:
    return {"scope": intent.scope, "endpoint": intent.endpoint, "ids": intent.ids, "at": intent.at}


@dataclass
class Following:
    """A running batch this client waits for: its intent, and its end."""

    intent: Intent
    ended: asyncio.Future


class BatchEnded(Exception):
    """Requests no batch could answer (sent ``MAX_SENDS`` times without an answer)."""

    def __init__(self, status: str, unfinished: int, message: str = ""):
        super().__init__(message or f"a batch ended {status} with {unfinished} requests unanswered")
        self.status, self.unfinished = status, unfinished
