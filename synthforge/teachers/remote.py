"""What every teacher behind a server shares: its own event-loop thread running an HTTP client (so the
synchronous teacher protocol can be called from any thread), an adaptive window of requests in flight, request
and token rate limits, and keeping a failed call's finished requests for its retry. A backend module subclasses
:class:`RemoteTeacher` with its request and response shapes and how its server's error statuses read."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable
from typing import Any

from synthforge.errors import TeacherError, UserError
from synthforge.teachers.flow import AdaptiveWindow, RateLimiter
from synthforge.teachers.http import ConnectionFailed, JsonClient, StatusError, TimedOut


class RemoteTeacher:
    """The client side of a server teacher. ``settings`` has ``base_url``, ``max_concurrency``, ``timeout``,
    ``retries``, ``requests_per_minute`` and ``tokens_per_minute``; ``headers`` go with every request."""

    remote = True

    def __init__(self, settings: Any, headers: dict[str, str], thread_name: str):
        self.settings = settings
        self.max_in_flight = settings.max_concurrency
        self.window = AdaptiveWindow(settings.max_concurrency)
        self.requests = RateLimiter(settings.requests_per_minute) if settings.requests_per_minute else None
        self.tokens = RateLimiter(settings.tokens_per_minute) if settings.tokens_per_minute else None
        self._salvage: dict[str, Any] = {}  # results of a failed call's successful requests, for its retry
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=thread_name, daemon=True)
        self._thread.start()
        self.client = JsonClient(settings.base_url, headers, settings.timeout, settings.retries, self._observe)

    def close(self) -> None:
        """Close the HTTP client and stop the event-loop thread."""
        if self._loop.is_running():
            asyncio.run_coroutine_threadsafe(self.client.close(), self._loop).result(timeout=10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)

    def _classify_status(self, exc: StatusError) -> Exception:
        """The error an error status becomes (a :class:`TeacherError`, retryable or not, or a user error)."""
        raise NotImplementedError

    async def _observe(self, response: Any) -> None:
        """Every HTTP response, retries included: 429/503/529 (overloaded) shrink the window."""
        if response.status_code in (429, 503, 529):
            self.window.on_congestion()

    async def _call(self, key: str, make: Awaitable[Any] | Any, cost: float) -> Any:
        """One request under the window and rate limits; its error becomes a classified TeacherError."""
        if key in self._salvage:
            return self._salvage.pop(key)
        if self.requests is not None:
            await self.requests.take(1)
        if self.tokens is not None:
            await self.tokens.take(cost)
        await self.window.acquire()
        started = time.monotonic()
        try:
            response = await make()
        except StatusError as exc:
            raise self._classify_status(exc) from None
        except TimedOut:
            self.window.on_congestion()
            raise TeacherError(f"request timed out after {self.settings.timeout:g} s (and retries)") from None
        except ConnectionFailed as exc:
            raise TeacherError(f"connection to {self.settings.base_url} failed: {exc}") from None
        finally:
            await self.window.release()
        if time.monotonic() - started > self.settings.timeout / 2:
            self.window.on_congestion()
        else:
            self.window.on_success()
        return response

    def _run(self, coroutines: list[Any], keys: list[str]) -> list[Any]:
        """Run request coroutines on the client's loop; if any fails, keep the others' results for the retry
        and raise the first error."""

        async def gather() -> list[Any]:
            return await asyncio.gather(*coroutines, return_exceptions=True)

        results = asyncio.run_coroutine_threadsafe(gather(), self._loop).result()
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            for key, result in zip(keys, results, strict=True):
                if not isinstance(result, BaseException):
                    self._salvage[key] = result
            raise next((e for e in errors if isinstance(e, UserError)), errors[0])
        return results
