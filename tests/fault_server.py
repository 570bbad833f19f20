"""A small OpenAI-compatible test server on 127.0.0.1 whose answers a test scripts: faults on demand.

Built on the standard library's threading HTTP server, so a test can drop a connection without answering,
answer late, or answer 429/500/401; a well-behaved request gets a deterministic chat completion.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Fault = tuple[int, dict[str, str], dict[str, Any]] | str | None  # (status, headers, body), "drop", ("sleep") or None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _answers(url: str) -> bool:
    """Whether an HTTP server answers at ``url`` (any status: one requiring a key answers 401)."""
    try:
        urllib.request.urlopen(url, timeout=1).read()
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False
    return True


@contextmanager
def serve_process(args: list[str], timeout: float = 120, env: dict[str, str] | None = None) -> Iterator[str]:
    """`synthforge serve ARGS` on a free 127.0.0.1 port: yields its /v1 URL once it answers, stops it after.
    Its stderr goes to a temporary file (a pipe nobody reads would fill and block it), shown if it fails."""
    with serve_handle(args, timeout, env) as (url, _):
        yield url


@contextmanager
def serve_handle(
    args: list[str], timeout: float = 120, env: dict[str, str] | None = None
) -> Iterator[tuple[str, subprocess.Popen]]:
    """As :func:`serve_process`, yielding the process too (a test may kill it)."""
    port = free_port()
    command = [sys.executable, "-m", "synthforge.cli.main", "serve", *args, "--port", str(port)]
    with tempfile.TemporaryFile("w+") as log:
        process = subprocess.Popen(command, stderr=log, env=env)
        url = f"http://127.0.0.1:{port}/v1"
        try:
            deadline = time.monotonic() + timeout
            while not _answers(f"{url}/models"):
                if process.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    raise RuntimeError(f"serve did not start: {log.read()[-4000:]}")
                time.sleep(0.2)
            yield url, process
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()


def chat_completion(request: dict[str, Any], text: str | None = None) -> dict[str, Any]:
    """A valid chat completion answering the request's last message."""
    last = request["messages"][-1]["content"]
    n = request.get("n", 1)
    content = text if text is not None else f"answer {request.get('seed')} to: {last[:30]}"
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": 0,
        "model": request["model"],
        "choices": [
            {"index": k, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
            for k in range(n)
        ],
        "usage": {"prompt_tokens": 10, "completion_tokens": 3 * n, "total_tokens": 10 + 3 * n},
    }


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that gave up (timed out) before a late answer is expected here, not an error."""


class FaultServer:
    """``script(request_number, body) -> Fault`` decides each POST's answer; None means answer normally.
    ``GET /models`` lists ``models`` (None: 404, a server that doesn't say)."""

    def __init__(
        self,
        script: Callable[[int, dict[str, Any]], Fault] = lambda i, b: None,
        delay: float = 0.0,
        models: list[str] | None = None,
    ):
        self.script = script
        self.delay = delay
        self.models = models
        self.requests: list[dict[str, Any]] = []
        self.gets: list[str] = []  # paths asked with GET
        self.headers: list[dict[str, str]] = []
        self.lock = threading.Lock()
        self.port = free_port()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                with server.lock:
                    server.gets.append(self.path)
                listed = server.models is not None and self.path.rstrip("/").endswith("/models")
                data = json.dumps({"object": "list", "data": [{"id": m, "object": "model"} for m in server.models]})
                self.send_response(200 if listed else 404)
                self.send_header("content-type", "application/json")
                body = data.encode() if listed else b'{"error": {"message": "not found"}}'
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
                with server.lock:
                    number = len(server.requests)
                    server.requests.append(body)
                    server.headers.append(dict(self.headers))
                fault = server.script(number, body)
                if fault == "drop":
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if fault == "sleep":
                    time.sleep(3.0)
                    fault = None
                status, headers, payload = fault if fault is not None else (200, {}, chat_completion(body))
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()  # bytes: sent as is
                self.send_response(status)
                for key, value in {**headers, "content-type": "application/json"}.items():
                    self.send_header(key, value)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = _QuietServer(("127.0.0.1", self.port), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> FaultServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
