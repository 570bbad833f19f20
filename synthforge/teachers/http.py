"""JSON over HTTP for teachers behind a server: POST a body, get its JSON answer, with the retries the OpenAI SDK
makes (408, 409, 429 and 5xx, timeouts and dropped connections; ``Retry-After``/``retry-after-ms`` honoured up to
a minute, else exponential back-off with jitter; ``x-should-retry`` obeyed). It is a thin layer over the HTTP
library the SDK itself uses, without the SDK's per-request model objects and validation, which cost more CPU than
the rest of a request on a small machine (``benchmarks/http_path.py``)."""

from __future__ import annotations

import asyncio
import email.utils
import json
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx2 as httpx

RETRYABLE = frozenset({408, 409, 429})
MAX_RETRY_AFTER = 60.0  # seconds; a longer Retry-After falls back to our own back-off, as the SDK does


class StatusError(Exception):
    """The server answered with an error status (after retries): ``status_code``, ``body`` (JSON or text)."""

    def __init__(self, status_code: int, body: Any):
        super().__init__(f"HTTP {status_code}")
        self.status_code = status_code
        self.body = body


class TimedOut(Exception):
    """No answer within the timeout (after retries)."""


class ConnectionFailed(Exception):
    """The connection could not be made or was dropped (after retries)."""


def retry_delay(headers: httpx.Headers | dict[str, str], attempt: int) -> float:
    """Seconds to wait before retry number ``attempt + 1``: the server's ``retry-after-ms``/``retry-after`` when
    between 0 and a minute, else 0.5 s doubled per attempt (at most 8 s) less up to a quarter of jitter."""
    wait = None
    if "retry-after-ms" in headers:
        wait = _number(headers["retry-after-ms"], 1e-3)
    if wait is None and "retry-after" in headers:
        wait = _number(headers["retry-after"], 1.0)
        if wait is None:
            when = email.utils.parsedate_tz(headers["retry-after"])
            wait = email.utils.mktime_tz(when) - time.time() if when else None
    if wait is not None and 0 < wait <= MAX_RETRY_AFTER:
        return wait
    return min(0.5 * 2.0**attempt, 8.0) * (1 - 0.25 * random.random())


def _number(text: str, scale: float) -> float | None:
    try:
        return float(text) * scale
    except ValueError:
        return None


def should_retry(response: httpx.Response) -> bool:
    """The server's ``x-should-retry`` when it says, else whether the status is worth another try."""
    said = response.headers.get("x-should-retry")
    if said in ("true", "false"):
        return said == "true"
    return response.status_code in RETRYABLE or response.status_code >= 500


def answer_of(response: httpx.Response) -> Any:
    """A response's JSON (any value), or its text when it is not JSON (a proxy's error page, a server bug)."""
    try:
        return json.loads(response.content)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return response.text


class JsonClient:
    """POSTs JSON bodies to ``base_url`` with ``headers``; ``observe`` sees every response, retries included."""

    def __init__(
        self,
        base_url: str,
        headers: dict[str, str],
        timeout: float,
        retries: int,
        observe: Callable[[httpx.Response], Awaitable[None]] | None = None,
    ):
        self.retries = retries
        self.timeout = timeout
        self._observe = observe
        self._client = httpx.AsyncClient(
            base_url=base_url.rstrip("/") + "/",
            headers={"accept": "application/json", **headers},
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=None),
        )

    async def post(self, path: str, body: dict[str, Any]) -> Any:
        """The JSON answer to ``body`` POSTed at ``path``; :class:`StatusError`, :class:`TimedOut` or
        :class:`ConnectionFailed` once the retries are spent."""
        content = json.dumps(body, ensure_ascii=False).encode("utf-8")
        return await self.send("POST", path, content=content, headers={"content-type": "application/json"})

    async def send(self, method: str, path: str, raw: bool = False, unsure: bool = True, **request: Any) -> Any:
        """One request with the retries :meth:`post` makes; the answer's JSON (its bytes with ``raw``).
        ``request``: what httpx takes (``content``, ``files`` and ``data`` for a multipart upload, ``params``).
        ``unsure=False``: not sent again after a timeout or a dropped connection, when the server may have acted
        on it (a batch create: the caller looks for what it made instead)."""
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            try:
                response = await self._client.request(method, path.lstrip("/"), **request)
            except httpx.TimeoutException:
                if last or not unsure:
                    raise TimedOut(f"no answer within {self.timeout:g} s") from None
                await asyncio.sleep(retry_delay({}, attempt))
                continue
            except httpx.TransportError as exc:
                if last or (not unsure and not isinstance(exc, httpx.ConnectError)):  # refused: nothing was sent
                    raise ConnectionFailed(str(exc) or type(exc).__name__) from None
                await asyncio.sleep(retry_delay({}, attempt))
                continue
            if self._observe is not None:
                await self._observe(response)
            if response.is_success:
                return response.content if raw else answer_of(response)
            if last or not should_retry(response):
                raise StatusError(response.status_code, answer_of(response))
            await asyncio.sleep(retry_delay(response.headers, attempt))
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def get(self, path: str) -> Any:
        """The JSON answer to one GET of ``path`` (no retries), or None when none came back with a 2xx."""
        try:
            response = await self._client.get(path.lstrip("/"), timeout=min(self.timeout, 10.0))
            return answer_of(response) if response.is_success else None
        except (httpx.HTTPError, ValueError):
            return None

    async def close(self) -> None:
        await self._client.aclose()


def error_detail(exc: StatusError) -> str:
    """The server's error message (OpenAI's ``{"error": {"message"}}`` or a bare ``{"message"}``), else the body's
    first line."""
    body = exc.body
    if isinstance(body, dict):
        error = body.get("error")
        message = error.get("message") if isinstance(error, dict) else body.get("message")
        if message:
            return str(message)
        return json.dumps(body)[:200]
    text = str(body).strip()
    return text.splitlines()[0][:200] if text else "(empty body)"


def url_problem(url: str) -> str | None:
    """Why ``url`` can't be a server's base URL (scheme, host, port), or None."""
    from urllib.parse import urlsplit

    if not url.startswith(("http://", "https://")):
        return "must start with http:// or https://"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return f"not a valid URL ({exc})"
    if not parts.hostname:
        return "names no host"
    if port == 0:
        return "port 0 is not a port a server listens on"
    return None
