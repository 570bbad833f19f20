"""Backpressure for HTTP teachers: an adaptive (AIMD) window of requests in flight, and rate limits.

Self-hosted servers rarely answer 429: they queue, and every request slows down. The window halves on
congestion (429, 503, a timeout, a response slower than half the timeout) and grows back by about one
request per window's worth of successes, like TCP's congestion avoidance.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field


@dataclass
class AdaptiveWindow:
    """At most ``size`` requests in flight (an int between 1 and ``limit``); AIMD-adjusted. Waiters are served
    first come, first served: a freed slot goes to the longest waiter directly (waking every waiter to race for
    it would cost each release time in proportion to the queue, and hundreds of requests queue)."""

    limit: int
    size: float = 0.0
    in_flight: int = 0
    congestion_events: int = 0
    _waiters: deque[asyncio.Future] = field(default_factory=deque, repr=False)

    def __post_init__(self) -> None:
        self.size = float(self.size or self.limit)

    def _room(self) -> bool:
        return self.in_flight < max(1, int(self.size))

    async def acquire(self) -> None:
        """Wait for a free slot in the window (call on the loop that releases it)."""
        if self._room() and not self._waiters:
            self.in_flight += 1
            return
        granted = asyncio.get_running_loop().create_future()
        self._waiters.append(granted)
        try:
            await granted  # the slot was counted for us when it was granted
        except asyncio.CancelledError:
            if granted.done() and not granted.cancelled():
                await self.release()  # granted, then cancelled before it ran: pass the slot on
            else:
                self._waiters.remove(granted)
            raise

    async def release(self) -> None:
        self.in_flight -= 1
        self._grant()

    def _grant(self) -> None:
        """Hand free slots to the longest waiters."""
        while self._waiters and self._room():
            granted = self._waiters.popleft()
            if not granted.done():
                self.in_flight += 1
                granted.set_result(None)

    def on_success(self) -> None:
        """Additive increase: about +1 per window of successful requests."""
        self.size = min(float(self.limit), self.size + 1.0 / max(self.size, 1.0))
        self._grant()

    def on_congestion(self) -> None:
        """Multiplicative decrease: halve the window (never below one request)."""
        self.congestion_events += 1
        self.size = max(1.0, self.size / 2.0)


@dataclass
class RateLimiter:
    """A token bucket refilled at ``per_minute / 60`` per second, holding at most one minute's worth."""

    per_minute: float
    clock: Callable[[], float] = time.monotonic  # what time it is (tests give a fake clock)
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep  # how to wait (a fake clock's advances it)
    _level: float | None = None
    _stamp: float = 0.0
    _lock: asyncio.Lock | None = field(default=None, repr=False)

    async def take(self, amount: float = 1.0) -> None:
        """Wait until ``amount`` units are available, then take them (a request larger than the bucket
        waits for a full bucket and takes it)."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            amount = min(amount, self.per_minute)
            while True:
                now = self.clock()
                if self._level is None:
                    self._level, self._stamp = self.per_minute, now
                self._level = min(self.per_minute, self._level + (now - self._stamp) * self.per_minute / 60.0)
                self._stamp = now
                if self._level >= amount:
                    self._level -= amount
                    return
                await self.sleep((amount - self._level) * 60.0 / self.per_minute)
