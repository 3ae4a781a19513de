"""Per-host request budgets: configured rates and concurrency caps, and quotas learned from headers.

What is learned is scoped the way the server defines it (RFC 6585 §4, RFC 9110 §10.2.3): the origin,
plus the partition the API declares (GitHub's `X-RateLimit-Resource`, a `X-RateLimit-Bucket`, the
IETF draft's `RateLimit` policy and partition key), plus the credential the request carried.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import httpx
from loguru import logger

from services.config import HostLimit
from services.errors import RateLimitedError, parse_retry_after
from services.headers import header_names
from services.origin import noop, origin_of
from services.state import Peers, Turns
from services.state.local import LocalTurns, NoPeers
from services.stats import BlockStats

MAX_BLOCKS = 1024
MAX_REMEMBERED_HOSTS = 1024
MAX_REMEMBERED_PATHS = 4096
# A declared partition name longer than this is cut: it reaches logs, stats and (shared) keys.
MAX_PARTITION_CHARS = 64

# Response headers that declare a quota, its partition or a wait; without any, there is nothing to learn.
_QUOTA_HEADERS = frozenset(
    {b"x-ratelimit-remaining", b"x-ratelimit-resource", b"x-ratelimit-bucket", b"ratelimit", b"retry-after"}
)
_WAIT_STATUSES = frozenset({429, 503})


def credential_of(request: httpx.Request) -> str:
    """A short digest of the request's `Authorization` value ('' without one); never the value."""
    value = request.headers.get("authorization")
    return hashlib.sha256(value.encode()).hexdigest()[:16] if value else ""


def _clean(value: str) -> str:
    return "".join(c for c in value.strip()[:MAX_PARTITION_CHARS] if c.isprintable())


@dataclass(frozen=True, slots=True)
class Scope:
    """What one learned block covers: an origin, one declared partition of it ('' = all), a credential."""

    origin: str
    partition: str = ""
    credential: str = ""

    def describe(self) -> str:
        """`https://api.github.com:443 resource=search credential 1a2b3c4d` (the credential digest cut)."""
        parts = [self.origin, self.partition or "all paths"]
        if self.credential:
            parts.append(f"credential {self.credential[:8]}")
        return " ".join(parts)


@dataclass(frozen=True, slots=True)
class Quota:
    """One partition an answer declared, and the wait it asked for when that partition is spent."""

    partition: str
    wait: float | None = None


def _ietf_items(value: str) -> list[tuple[str, dict[str, str]]]:
    """`"default";r=0;t=30, "daily";r=5` -> [('default', {'r': '0', 't': '30'}), ...] (a lenient reader)."""
    items = []
    for member in value.split(","):
        name, *params = (p.strip() for p in member.split(";"))
        if not name:
            continue
        found = {}
        for param in params:
            key, _, arg = param.partition("=")
            found[key.strip().lower()] = arg.strip()
        items.append((name.strip('"'), found))
    return items


def _ietf_quotas(value: str) -> list[Quota]:
    """Partitions of a draft-ietf-httpapi-ratelimit-headers `RateLimit` field, with waits for spent ones."""
    quotas = []
    for name, params in _ietf_items(value):
        partition = f"policy={_clean(name)}"
        key = params.get("pk")
        if key:  # a partition key may be derived from the client's identity: keep only a digest
            partition += ";pk=" + hashlib.sha256(key.encode()).hexdigest()[:12]
        reset = params.get("t", "")
        spent = params.get("r") == "0" and reset.isdigit()
        quotas.append(Quota(partition, float(reset) if spent else None))
    return quotas


def _seconds(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def declared_quotas(response: httpx.Response) -> list[Quota]:
    """The partitions `response` declares (none: the whole origin), each with a wait if it is spent."""
    headers = response.headers
    status = response.status_code
    quotas = _ietf_quotas(headers["ratelimit"]) if "ratelimit" in headers else []
    named = headers.get("x-ratelimit-resource") or headers.get("x-ratelimit-bucket")
    # GitHub and Discord: one partition per answer; remaining 0 or a 429 means it is spent.
    spent = headers.get("x-ratelimit-remaining") == "0" or status in _WAIT_STATUSES
    wait = None
    if spent:
        wait = parse_retry_after(headers)
        if wait is None and headers.get("x-ratelimit-remaining") == "0":
            wait = _seconds(headers.get("x-ratelimit-reset-after"))  # Discord's form, in seconds
    if named:
        kind = "resource" if "x-ratelimit-resource" in headers else "bucket"
        quotas.append(Quota(f"{kind}={_clean(named)}", wait))
    elif wait is not None and not any(q.wait is not None for q in quotas):
        if quotas and status in _WAIT_STATUSES:
            quotas = [Quota(q.partition, wait) for q in quotas]  # refused with no item spent: all of them
        elif not quotas:
            quotas.append(Quota("", wait))  # no partition declared: the origin (RFC 9110 §10.2.3)
    return quotas


class HostLimiter:
    """Makes each attempt wait its turn for its host, or fail at once when the turn is too far off."""

    def __init__(
        self,
        limits: tuple[HostLimit, ...],
        clock: Callable[[], float] = time.monotonic,
        turns: Turns | None = None,
        peers: Peers | None = None,
    ) -> None:
        self._limits = limits
        self._clock = clock
        # Generic cell rate algorithm per limited host: in this process, or the cluster's.
        self._turns: Turns = turns if turns is not None else LocalTurns(clock)
        self._peers: Peers = peers if peers is not None else NoPeers()
        # Scopes that told us (a spent quota, or a 429/503 with Retry-After) to stay away until then.
        self._blocked: dict[Scope, float] = {}
        # The partitions each (origin, path) last declared: a request's partition is known only from these.
        self._paths: OrderedDict[tuple[str, str], tuple[str, ...]] = OrderedDict()
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

    def unlimited(self, url: httpx.URL) -> bool:
        """Whether a request to `url` may go at once, with nothing to wait for or release."""
        return not self._blocked and (not self._limits or self.limit_for(url.host) is None)

    async def acquire(self, request: httpx.Request, budget: float) -> Callable[[], None]:
        """Wait for a turn for the request's host, at most `budget` seconds; returns the release.

        Raises:
            RateLimitedError: the wait would be longer than `budget`; `retry_after` says how long.
        """
        host = request.url.host
        limit = self.limit_for(host) if self._limits else None
        if limit is None and not self._blocked:
            return noop
        wait = await self._reserve(limit, request, budget)
        if wait > 0:
            self.waits += 1
            await asyncio.sleep(wait)
        if limit is None or not limit.concurrency:
            return noop
        semaphore = self._semaphore(limit)
        try:
            async with asyncio.timeout(max(0.0, budget - wait)):
                await semaphore.acquire()
        except TimeoutError:
            raise RateLimitedError(
                f"{limit.concurrency} requests to {host} already in flight", request=request
            ) from None
        return semaphore.release

    async def _reserve(self, limit: HostLimit | None, request: httpx.Request, budget: float) -> float:
        wait, scope = 0.0, None
        if self._blocked:
            now = self._clock()
            with self._lock:
                wait, scope = self._blocked_wait(request, now)
        if wait > budget:
            raise self._refuse(request, scope, wait)
        if limit is not None and limit.requests:
            interval = limit.period / limit.requests
            turn = await self._turns.reserve(
                limit.host, interval, interval * (limit.requests - 1), wait, budget
            )
            if turn > wait:
                wait, scope = turn, None
            if wait > budget:
                raise self._refuse(request, scope, wait)
        return wait

    def _blocked_wait(self, request: httpx.Request, now: float) -> tuple[float, Scope | None]:
        """The longest block over the request's scopes (its origin, and its path's known partitions)."""
        url = request.url
        origin, credential = origin_of(url), credential_of(request)
        partitions = self._paths.get((origin, url.path), ())
        wait, worst = 0.0, None
        for partition in ("", *partitions):
            scope = Scope(origin, partition, credential)
            until = self._blocked.get(scope)
            if until is None:
                continue
            if until <= now:
                del self._blocked[scope]
            elif until - now > wait:
                wait, worst = until - now, scope
        return wait, worst

    def _refuse(self, request: httpx.Request, scope: Scope | None, wait: float) -> RateLimitedError:
        where = scope.describe() if scope is not None else request.url.host
        return RateLimitedError(
            f"rate limit for {where}: next request allowed in {wait:.1f}s", request=request, retry_after=wait
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
        """Learn what the answer declares: its path's partitions, and any that is spent, until when."""
        names = header_names(response)
        if names.isdisjoint(_QUOTA_HEADERS):
            return
        quotas = declared_quotas(response)
        if not quotas:
            return
        request = response.request
        origin, path = origin_of(request.url), request.url.path
        partitions = tuple(q.partition for q in quotas if q.partition)
        if partitions:
            with self._lock:
                self._remember(origin, path, partitions)
        spent = [q for q in quotas if q.wait is not None and q.wait > 0]
        if spent:
            credential = credential_of(request)
            for quota in spent:
                self.block(Scope(origin, quota.partition, credential), quota.wait or 0.0, path)

    def _remember(self, origin: str, path: str, partitions: tuple[str, ...]) -> None:
        key = (origin, path)
        if self._paths.get(key) == partitions:
            self._paths.move_to_end(key)
            return
        self._paths[key] = partitions
        if len(self._paths) > MAX_REMEMBERED_PATHS:
            self._paths.popitem(last=False)

    def block(self, scope: Scope, wait: float, path: str = "", *, announce: bool = True) -> None:
        """Refuse requests in `scope` for `wait` seconds; `path` declared its partition.

        `announce=False` for a block another process learned. Bounded: past MAX_BLOCKS, new ones are dropped.
        """
        now = self._clock()
        with self._lock:
            known = self._paths.get((scope.origin, path), ())
            if scope.partition and path and scope.partition not in known:
                self._remember(scope.origin, path, (*known, scope.partition))
            if scope not in self._blocked and len(self._blocked) >= MAX_BLOCKS:
                for stale in [s for s, t in self._blocked.items() if t <= now]:
                    del self._blocked[stale]
                if len(self._blocked) >= MAX_BLOCKS:
                    return
            self._blocked[scope] = max(now + wait, self._blocked.get(scope, 0.0))
        if announce:
            logger.info("{} asked us to wait {:.0f}s before the next request", scope.describe(), wait)
            self._peers.block_learned(scope, wait, path)
        else:
            logger.info("{}: another process was asked to wait {:.0f}s; so do we", scope.describe(), wait)

    def blocks(self) -> tuple[BlockStats, ...]:
        """The blocks in force, longest first."""
        now = self._clock()
        with self._lock:
            live = [(s, t - now) for s, t in self._blocked.items() if t > now]
        live.sort(key=lambda item: -item[1])
        return tuple(BlockStats(s.origin, s.partition, s.credential[:8], round(left, 1)) for s, left in live)
