"""A local stand-in of Anthropic's Messages API (we can't reach the real one from here), written from its documented
request and response shapes (anthropic-sdk-python's types: MessageCreateParams, Message, StopReason, Usage, and
the API's error body ``{"type": "error", "error": {"type", "message"}}``). It checks what the real API checks that
matters to a client: the x-api-key and anthropic-version headers, a required max_tokens, the system prompt as a
top-level field and only user/assistant turns in messages, temperature and top_p not both (recent models refuse
them together), and extended thinking's rules (budget_tokens >= 1024 and below max_tokens, temperature 1). The
answer is deterministic: the last user turn echoed; prompts containing a marker trigger a refusal, a 429 with
retry-after, a 529 (overloaded), or a prompt too long. It counts what it was sent (``seen``).

Message Batches (``/v1/messages/batches``: create, list newest first with ``after_id``, retrieve, results as
JSONL, cancel, delete), from the same documented shapes (MessageBatch, MessageBatchIndividualResponse): custom_ids
of 1-64 characters of [A-Za-z0-9_-], unique in a batch; each request's params checked when the batch is processed
(a bad one is an ``errored`` result, as the API reports them); created_at as an RFC 3339 time. A batch is
``in_progress`` for its first retrieve and ends at the next, unless ``hold`` is set (then it runs until it is
cleared); a cancel ends it with the requests not yet processed ``canceled``."""

from __future__ import annotations

import json
import re
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.fault_server import free_port

KEY = "standin-key"
VERSION = "2023-06-01"


def _error(kind: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": kind, "message": message}}


def check(body: dict[str, Any]) -> str | None:
    """What the real API would refuse in this request body (an invalid_request_error), or None."""
    if not isinstance(body.get("max_tokens"), int):
        return "max_tokens: Field required"
    roles = [m.get("role") for m in body.get("messages", [])]
    if not roles or any(r not in ("user", "assistant") for r in roles):
        return "messages: roles must be user or assistant (the system prompt is the top-level system field)"
    if "temperature" in body and "top_p" in body:
        return "`temperature` and `top_p` cannot both be specified for this model. Please use only one."
    thinking = body.get("thinking")
    if thinking is not None:
        budget = thinking.get("budget_tokens", 0)
        if budget < 1024:
            return "thinking.budget_tokens: Input should be greater than or equal to 1024"
        if budget >= body["max_tokens"]:
            return "`max_tokens` must be greater than `thinking.budget_tokens`"
        if body.get("temperature", 1) != 1:
            return "`temperature` may only be set to 1 when thinking is enabled"
    return None


def answer(body: dict[str, Any]) -> tuple[int, dict[str, str], dict[str, Any]]:
    """(status, headers, JSON) of the stand-in's answer to a valid request."""
    last = body["messages"][-1]["content"]
    last = last if isinstance(last, str) else json.dumps(last)
    if "TOO LONG" in last:
        return 400, {}, _error("invalid_request_error", "prompt is too long: 210000 tokens > 200000 maximum")
    words = f"echo: {last}".split()
    content: list[dict[str, Any]] = []
    if body.get("thinking"):
        content.append({"type": "thinking", "thinking": f"thinking about {last}", "signature": "sig"})
    if "REFUSE" in last:
        return 200, {}, _message(body, content, "refusal", 0)
    if body.get("output_config"):
        text, reason = json.dumps({"label": "ok", "about": last[:20]}), "end_turn"
    elif len(words) > body["max_tokens"]:
        text, reason = " ".join(words[: body["max_tokens"]]), "max_tokens"
    else:
        text, reason = " ".join(words), "end_turn"
        for stop in body.get("stop_sequences", []):
            if stop in text:
                text, reason = text[: text.index(stop)], "stop_sequence"
                break
    content.append({"type": "text", "text": text})
    return 200, {}, _message(body, content, reason, len(text.split()))


def _message(body: dict[str, Any], content: list, reason: str, out: int) -> dict[str, Any]:
    prompt = sum(len(str(m["content"]).split()) for m in body["messages"]) + len(str(body.get("system", "")).split())
    return {
        "id": "msg_standin",
        "type": "message",
        "role": "assistant",
        "model": body["model"],
        "content": content,
        "stop_reason": reason,
        "stop_sequence": None,
        "usage": {"input_tokens": prompt, "output_tokens": out, "cache_read_input_tokens": 0},
    }


class StandIn:
    """The running stand-in: its ``url`` (a host, without /v1), the requests it was ``seen``, its ``batches``
    (id -> the batch object, newest last), and ``hold`` (set: batches stay in progress)."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []
        self.attempts: dict[str, int] = {}  # marker -> requests with it (for 429/529 then success)
        self.lock = threading.Lock()
        self.url = ""
        self.batches: dict[str, dict[str, Any]] = {}
        self.requests: dict[str, list[dict[str, Any]]] = {}  # batch id -> its requests
        self.results: dict[str, list[dict[str, Any]]] = {}  # batch id -> its result lines, once ended
        self.retrieved: dict[str, int] = {}
        self.hold = threading.Event()

    def respond(self, body: dict[str, Any]) -> tuple[int, dict[str, str], dict[str, Any]]:
        """The Messages API's answer to ``body`` (markers first fail once, then answer)."""
        with self.lock:
            self.seen.append(body)
        problem = check(body)
        if problem:
            return 400, {}, _error("invalid_request_error", problem)
        last = str(body["messages"][-1]["content"])
        for marker, status, kind in (("BUSY", 429, "rate_limit_error"), ("OVERLOADED", 529, "overloaded_error")):
            if marker in last:
                with self.lock:
                    self.attempts[marker] = self.attempts.get(marker, 0) + 1
                    first = self.attempts[marker] == 1
                if first:
                    return status, {"retry-after": "0"}, _error(kind, "try again")
        return answer(body)

    # -- Message Batches -----------------------------------------------------------------------------------------
    def create_batch(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        requests = body.get("requests")
        if not isinstance(requests, list) or not requests:
            return 400, _error("invalid_request_error", "requests: at least one request is required")
        ids = [r.get("custom_id") for r in requests]
        if any(not isinstance(i, str) or not CUSTOM_ID.match(i) for i in ids):
            return 400, _error("invalid_request_error", "custom_id: 1-64 characters of [a-zA-Z0-9_-]")
        if len(set(ids)) != len(ids):
            return 400, _error("invalid_request_error", "custom_id must be unique within a batch")
        now = datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")
        batch = {
            "id": "msgbatch_" + secrets.token_hex(12),
            "type": "message_batch",
            "processing_status": "in_progress",
            "request_counts": {"processing": len(ids), "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0},
            "created_at": now,
            "expires_at": now,
            "ended_at": None,
            "cancel_initiated_at": None,
            "archived_at": None,
            "results_url": None,
        }
        with self.lock:
            self.batches[batch["id"]], self.requests[batch["id"]] = batch, requests
        return 200, batch

    def retrieve(self, batch_id: str) -> dict[str, Any]:
        with self.lock:
            self.retrieved[batch_id] = self.retrieved.get(batch_id, 0) + 1
            due = self.retrieved[batch_id] > 1 and not self.hold.is_set()
        if due and self.batches[batch_id]["processing_status"] == "in_progress":
            self._end(batch_id, [self._result(r) for r in self.requests[batch_id]])
        return self.batches[batch_id]

    def _result(self, request: dict[str, Any]) -> dict[str, Any]:
        status, _, body = self.respond(request["params"])
        if status == 200:
            return {"custom_id": request["custom_id"], "result": {"type": "succeeded", "message": body}}
        return {"custom_id": request["custom_id"], "result": {"type": "errored", "error": body}}

    def cancel(self, batch_id: str) -> dict[str, Any]:
        batch = self.batches[batch_id]
        if batch["processing_status"] == "in_progress":
            batch["cancel_initiated_at"] = batch["created_at"]
            canceled = [{"custom_id": r["custom_id"], "result": {"type": "canceled"}} for r in self.requests[batch_id]]
            self._end(batch_id, canceled)
        return batch

    def _end(self, batch_id: str, results: list[dict[str, Any]]) -> None:
        batch = self.batches[batch_id]
        counts = {"processing": 0, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
        for row in results:
            counts[row["result"]["type"]] += 1
        batch.update(processing_status="ended", request_counts=counts, ended_at=batch["created_at"])
        batch["results_url"] = f"{self.url}/v1/messages/batches/{batch_id}/results"
        self.results[batch_id] = results

    def listed(self, query: dict[str, list[str]]) -> dict[str, Any]:
        newest = list(reversed(self.batches.values()))
        after = query.get("after_id", [None])[0]
        if after is not None:
            ids = [b["id"] for b in newest]
            newest = newest[ids.index(after) + 1 :] if after in ids else []
        limit = int(query.get("limit", ["20"])[0])
        page = newest[:limit]
        last = page[-1]["id"] if page else None
        return {
            "data": page,
            "has_more": len(newest) > limit,
            "first_id": page[0]["id"] if page else None,
            "last_id": last,
        }


CUSTOM_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
BATCHES = "/v1/messages/batches"


@contextmanager
def anthropic_standin() -> Iterator[StandIn]:
    """The stand-in on a free 127.0.0.1 port, stopped when the block ends."""
    state = StandIn()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _send(self, status: int, headers: dict[str, str], body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            for key, value in {"content-type": "application/json", **headers}.items():
                self.send_header(key, value)
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _allowed(self) -> bool:
            if self.headers.get("x-api-key") != KEY:
                self._send(401, {}, _error("authentication_error", "invalid x-api-key"))
            elif self.headers.get("anthropic-version") != VERSION:
                self._send(400, {}, _error("invalid_request_error", "anthropic-version header is required"))
            else:
                return True
            return False

        def _batch(self, path: str) -> tuple[dict[str, Any] | None, str]:
            """The batch a /v1/messages/batches/ID[/...] path names (None, after a 404, when there is none)."""
            parts = path.split("?")[0].split("/")[4:]
            batch = state.batches.get(parts[0]) if parts else None
            if batch is None:
                self._send(404, {}, _error("not_found_error", f"{path} not found"))
            return batch, "/".join(parts[1:])

        def do_GET(self) -> None:  # noqa: N802
            from urllib.parse import parse_qs, urlsplit

            url = urlsplit(self.path)
            if url.path == "/v1/models":
                return self._send(200, {}, {"data": [{"type": "model", "id": "claude-standin"}], "has_more": False})
            if not url.path.startswith(BATCHES) or not self._allowed():
                return None if url.path.startswith(BATCHES) else self._send(404, {}, _error("not_found_error", "?"))
            if url.path == BATCHES:
                return self._send(200, {}, state.listed(parse_qs(url.query)))
            batch, rest = self._batch(url.path)
            if batch is None:
                return None
            if rest == "":
                return self._send(200, {}, state.retrieve(batch["id"]))
            if rest == "results" and batch["id"] in state.results:
                data = "".join(json.dumps(r) + "\n" for r in state.results[batch["id"]]).encode()
                self.send_response(200)
                self.send_header("content-type", "application/binary")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                return self.wfile.write(data)
            return self._send(400, {}, _error("invalid_request_error", "the batch has not ended yet"))

        def do_DELETE(self) -> None:  # noqa: N802
            if not self._allowed():
                return None
            batch, _ = self._batch(self.path)
            if batch is None:
                return None
            if batch["processing_status"] != "ended":
                return self._send(400, {}, _error("invalid_request_error", "a batch must end before it is deleted"))
            del state.batches[batch["id"]]
            return self._send(200, {}, {"id": batch["id"], "type": "message_batch_deleted"})

        def do_POST(self) -> None:  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers["content-length"])))
            if self.path != "/v1/messages" and not self.path.startswith(BATCHES):
                return self._send(404, {}, _error("not_found_error", f"{self.path} not found"))
            if not self._allowed():
                return None
            if self.path == BATCHES:
                status, created = state.create_batch(body)
                return self._send(status, {}, created)
            if self.path.startswith(BATCHES):
                batch, rest = self._batch(self.path)
                if batch is not None and rest == "cancel":
                    return self._send(200, {}, state.cancel(batch["id"]))
                return None if batch is None else self._send(404, {}, _error("not_found_error", self.path))
            return self._send(*state.respond(body))

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


def anthropic_teacher(standin: StandIn, **settings: Any) -> Any:
    """An Anthropic teacher of model claude-standin talking to ``standin``."""
    from synthforge.teachers.backends.anthropic import AnthropicSettings, AnthropicTeacher

    return AnthropicTeacher("claude-standin", AnthropicSettings(base_url=standin.url, **settings), {"backend": "a"})
