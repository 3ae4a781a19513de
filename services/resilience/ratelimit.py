"""Per-host request budgets: configured rates and concurrency caps, and quotas learned from headers."""

from __future__ import annotations

import asyncio
import threading
import time
import weakref
from collections.abc import Callable

import httpx
from loguru import logger

from services.config import HostLimit
from services.errors import RateLimitedError, parse_retry_after
from services.headers import header_names

MAX_BLOCKED_HOSTS = 1024
MAX_REMEMBERED_HOSTS = 1024


def _noop() -> None:
    return None


class HostLimiter:
    """Makes each attempt wait its turn for its host, or fail at once when the turn is too far off."""

    def __init__(self, limits: tuple[HostLimit, ...], clock: Callable[[], float] = time.monotonic) -> None:
        self._limits = limits
        self._clock = clock
        # Generic cell rate algorithm: the time the next request may go out, per limited host.
        self._next_at: dict[str, float] = {}
        # Hosts that told us (X-RateLimit-Remaining: 0, or a 429 with Retry-After) to stay away until then.
        self._blocked: dict[str, float] = {}
        self._lock = threading.Lock()
        self._by_host: dict[str, HostLimit | None] = {}
        # A semaphore binds to the loop that first waits on it, so each loop gets its own.
        self._semaphores: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, dict[str, asyncio.Semaphore]
        ] = weakref.WeakKeyDictionary()
        self.waits = 0

    def limit_for(self, host: str) -> HostLimit | None:
        """The configured limit covering `host`, if any."""
        try:
            return self._by_host[host]
        except KeyError:
            pass
        found = next((limit for limit in self._limits if limit.matches(host)), None)
        if len(self._by_host) >= MAX_REMEMBERED_HOSTS:
            self._by_host.clear()
        self._by_host[host] = found
        return found

    def unlimited(self, host: str) -> bool:
        """Whether a request to `host` may go at once, with nothing to wait for or release."""
        return not self._blocked and (not self._limits or self.limit_for(host) is None)

    async def acquire(self, request: httpx.Request, budget: float) -> Callable[[], None]:
        """Wait for a turn for the request's host, at most `budget` seconds; returns the release.

        Raises:
            RateLimitedError: the wait would be longer than `budget`; `retry_after` says how long.
        """
        host = request.url.host
        limit = self.limit_for(host) if self._limits else None
        if limit is None and not self._blocked:
            return _noop
        wait = self._reserve(host, limit, request, budget)
        if wait > 0:
            self.waits += 1
            await asyncio.sleep(wait)
        if limit is None or not limit.concurrency:
            return _noop
        semaphore = self._semaphore(limit)
        try:
            async with asyncio.timeout(max(0.0, budget - wait)):
                await semaphore.acquire()
        except TimeoutError:
            raise RateLimitedError(
                f"{limit.concurrency} requests to {host} already in flight", request=request
            ) from None
        return semaphore.release

    def _reserve(self, host: str, limit: HostLimit | None, request: httpx.Request, budget: float) -> float:
        now = self._clock()
        with self._lock:
            wait = 0.0
            blocked_until = self._blocked.get(host)
            if blocked_until is not None:
                if blocked_until <= now:
                    del self._blocked[host]
                else:
                    wait = blocked_until - now
            if limit is not None and limit.requests:
                interval = limit.period / limit.requests
                burst = interval * (limit.requests - 1)
                next_at = max(self._next_at.get(limit.host, now), now)
                wait = max(wait, next_at - burst - now)
                if wait > budget:
                    raise self._refuse(host, request, wait)
                self._next_at[limit.host] = max(next_at, now + wait) + interval
            elif wait > budget:
                raise self._refuse(host, request, wait)
            return wait

    def _refuse(self, host: str, request: httpx.Request, wait: float) -> RateLimitedError:
        return RateLimitedError(
            f"rate limit for {host}: next request allowed in {wait:.1f}s", request=request, retry_after=wait
        )

    def _semaphore(self, limit: HostLimit) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        with self._lock:
            per_loop = self._semaphores.setdefault(loop, {})
            semaphore = per_loop.get(limit.host)
            if semaphore is None:
                semaphore = per_loop[limit.host] = asyncio.Semaphore(limit.concurrency)
            return semaphore

    def observe(self, response: httpx.Response) -> None:
        """Learn a host's exhausted quota from its headers, so later calls don't spend a request."""
        if response.status_code != 429 and b"x-ratelimit-remaining" not in header_names(response):
            return
        headers = response.headers
        exhausted = headers.get("x-ratelimit-remaining") == "0"
        if not exhausted and response.status_code != 429:
            return
        wait = parse_retry_after(headers)
        if wait is None or wait <= 0:
            return
        host = response.request.url.host
        until = self._clock() + wait
        with self._lock:
            if len(self._blocked) >= MAX_BLOCKED_HOSTS:
                now = self._clock()
                for stale in [h for h, t in self._blocked.items() if t <= now]:
                    del self._blocked[stale]
                if len(self._blocked) >= MAX_BLOCKED_HOSTS:
                    return
            self._blocked[host] = max(until, self._blocked.get(host, 0.0))
        logger.info("{} asked us to wait {:.0f}s before the next request", host, wait)
