"""A local stand-in of Anthropic's Messages API (we can't reach the real one from here), written from its documented
request and response shapes (anthropic-sdk-python's types: MessageCreateParams, Message, StopReason, Usage, and
the API's error body ``{"type": "error", "error": {"type", "message"}}``). It checks what the real API checks that
matters to a client: the x-api-key and anthropic-version headers, a required max_tokens, the system prompt as a
top-level field and only user/assistant turns in messages, temperature and top_p not both (recent models refuse
them together), and extended thinking's rules (budget_tokens >= 1024 and below max_tokens, temperature 1). The
answer is deterministic: the last user turn echoed; prompts containing a marker trigger a refusal, a 429 with
retry-after, a 529 (overloaded), or a prompt too long. It counts what it was sent (``seen``)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
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
    """The running stand-in: its ``url`` (a host, without /v1), and the requests it was ``seen``."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []
        self.attempts: dict[str, int] = {}  # marker -> requests with it (for 429/529 then success)
        self.lock = threading.Lock()
        self.url = ""


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

        def do_GET(self) -> None:  # noqa: N802
            if self.path == "/v1/models":
                self._send(200, {}, {"data": [{"type": "model", "id": "claude-standin"}], "has_more": False})
            else:
                self._send(404, {}, _error("not_found_error", f"{self.path} not found"))

        def do_POST(self) -> None:  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers["content-length"])))
            if self.path != "/v1/messages":
                return self._send(404, {}, _error("not_found_error", f"{self.path} not found"))
            if self.headers.get("x-api-key") != KEY:
                return self._send(401, {}, _error("authentication_error", "invalid x-api-key"))
            if self.headers.get("anthropic-version") != VERSION:
                return self._send(400, {}, _error("invalid_request_error", "anthropic-version header is required"))
            with state.lock:
                state.seen.append(body)
            problem = check(body)
            if problem:
                return self._send(400, {}, _error("invalid_request_error", problem))
            last = str(body["messages"][-1]["content"])
            for marker, status, kind in (("BUSY", 429, "rate_limit_error"), ("OVERLOADED", 529, "overloaded_error")):
                if marker in last:
                    with state.lock:
                        state.attempts[marker] = state.attempts.get(marker, 0) + 1
                        first = state.attempts[marker] == 1
                    if first:
                        return self._send(status, {"retry-after": "0"}, _error(kind, "try again"))
            self._send(*answer(body))

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
