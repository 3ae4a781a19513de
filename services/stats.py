"""Live figures of the shared client: its connection pool and the requests it has carried."""

from __future__ import annotations

import bisect
import math
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

ConnectionState = Literal["active", "idle", "connecting"]


@dataclass(frozen=True, slots=True)
class ConnectionSnapshot:
    """One pooled connection as seen at snapshot time."""

    origin: str
    state: ConnectionState
    http_version: str
    streams: int = 0  # open streams on an HTTP/2 connection


@dataclass(frozen=True, slots=True)
class SlotCounts:
    """One origin's share of a pool: requests holding a slot, queued, its current limit, requests shed."""

    in_flight: int
    queued: int
    limit: int
    shed: int


@dataclass(frozen=True, slots=True)
class PoolState:
    """What a transport reports of its pool: its connections, requests waiting and slots per origin."""

    connections: tuple[ConnectionSnapshot, ...]
    queued: dict[str, int]
    slots: dict[str, SlotCounts] = field(default_factory=dict)


@runtime_checkable
class ReportsPoolState(Protocol):
    """A transport that knows its own pool exactly (Courier's own transport does)."""

    def pool_state(self) -> PoolState:
        """Return the live state of the pool without awaiting anything."""
        ...


@dataclass(frozen=True, slots=True)
class OriginStats:
    """Live pool figures for one origin (scheme, host, port)."""

    origin: str
    connections: int = 0
    active: int = 0
    idle: int = 0
    connecting: int = 0
    queued: int = 0
    http1: int = 0
    http2: int = 0
    in_flight: int = 0
    limit: int | None = None  # None: the transport sets no per-origin limit (httpcore)
    shed: int = 0
    streams: int = 0  # open HTTP/2 streams


@dataclass(frozen=True, slots=True)
class LatencyStats:
    """Latency percentiles over the recent window, in milliseconds."""

    samples: int
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None


@dataclass(frozen=True, slots=True)
class CacheStats:
    """The HTTP cache: lookups answered from memory, sent upstream, or confirmed by a 304."""

    hits: int = 0
    misses: int = 0
    revalidated: int = 0
    entries: int = 0
    bytes: int = 0
    shared_hits: int = 0


@dataclass(frozen=True, slots=True)
class BlockStats:
    """A learned block in force: its origin, the partition ('' = every path), whose credential, time left."""

    origin: str
    partition: str
    credential: str
    seconds_left: float


@dataclass(frozen=True, slots=True)
class OriginTrend:
    """One origin over the last hour, oldest slot first: latency p95 (ms) and errors per slot."""

    origin: str
    requests: int
    p95_ms: tuple[float | None, ...]
    errors: tuple[int | None, ...]


@dataclass(frozen=True, slots=True)
class ProcessStats:
    """One process's figures as it last published them to the cluster."""

    instance: str
    requests_total: int = 0
    in_flight: int = 0
    errors: int = 0
    rate_limited: int = 0
    cache_hits: int = 0
    blocks: int = 0
    open_circuits: int = 0
    age: float = 0.0


@dataclass(frozen=True, slots=True)
class ClusterStats:
    """Every process sharing state: whether sharing works, totals, and a row per process."""

    sharing: str  # "connected", "connecting" or "degraded"
    backend: str  # where, without a password
    instance: str
    processes: tuple[ProcessStats, ...] = ()
    requests_total: int = 0
    in_flight: int = 0
    errors: int = 0
    rate_limited: int = 0
    cache_hits: int = 0
    fallbacks: int = 0
    detail: str = ""


@dataclass(frozen=True, slots=True)
class PoolStats:
    """A snapshot of the shared client: live pool figures, configured limits and request counters."""

    available: bool
    client_open: bool
    transport: str
    connections: int
    active: int
    idle: int
    connecting: int
    queued: int
    http1: int
    http2: int
    origins: tuple[OriginStats, ...]
    max_connections: int
    max_keepalive_connections: int
    keepalive_expiry: float
    requests_total: int
    in_flight: int
    by_status_class: dict[str, int]
    errors: dict[str, int]
    latency: LatencyStats
    taken_at: float = field(default_factory=time.time)
    retries: int = 0
    rate_limited: int = 0
    breakers: dict[str, str] = field(default_factory=dict)
    cache: CacheStats = field(default_factory=CacheStats)
    blocks: tuple[BlockStats, ...] = ()
    trends: tuple[OriginTrend, ...] = ()
    cluster: ClusterStats | None = None

    def as_dict(self) -> dict[str, Any]:
        """Plain, JSON-friendly form of the snapshot."""
        return asdict(self)


def merge_pool_states(states: list[PoolState]) -> PoolState:
    """One PoolState from several (a client's mounts, or the clients of several loops)."""
    queued: Counter[str] = Counter()
    slots: dict[str, SlotCounts] = {}
    for s in states:
        queued.update(s.queued)
        for origin, counts in s.slots.items():
            known = slots.get(origin)
            slots[origin] = counts if known is None else _add_slots(known, counts)
    return PoolState(tuple(c for s in states for c in s.connections), dict(queued), slots)


def _add_slots(a: SlotCounts, b: SlotCounts) -> SlotCounts:
    """One origin's slots over two pools (the clients of two event loops)."""
    return SlotCounts(a.in_flight + b.in_flight, a.queued + b.queued, a.limit + b.limit, a.shed + b.shed)


def summarize_origins(state: PoolState) -> tuple[OriginStats, ...]:
    """Group connections and queued requests by origin."""
    rows: dict[str, dict[str, int]] = {}
    for conn in state.connections:
        row = rows.setdefault(conn.origin, Counter())
        row["connections"] += 1
        row[conn.state] += 1
        row["http2" if conn.http_version == "HTTP/2" else "http1"] += 1
        if conn.streams:
            row["streams"] += conn.streams
    for origin, count in state.queued.items():
        rows.setdefault(origin, Counter())["queued"] += count
    for origin, slots in state.slots.items():
        if slots.in_flight or slots.queued or slots.shed or origin in rows:
            row = rows.setdefault(origin, Counter())
            row["in_flight"] += slots.in_flight
            row["shed"] += slots.shed
    return tuple(
        OriginStats(origin, **counts, limit=_limit(state, origin)) for origin, counts in sorted(rows.items())
    )


def _limit(state: PoolState, origin: str) -> int | None:
    slots = state.slots.get(origin)
    return None if slots is None else slots.limit


_STATUS_CLASSES = tuple(f"{n}xx" for n in range(6))


def _status_class(status: int) -> str:
    """`404` -> `4xx`, without formatting a string for the statuses that exist."""
    return _STATUS_CLASSES[status // 100] if 0 <= status < 600 else f"{status // 100}xx"


class RequestStats:
    """Counters the service keeps for itself: totals, in flight, outcomes and latency."""

    def __init__(self, window: int = 1000, trends: Trends | None = None) -> None:
        self.trends = Trends() if trends is None else trends
        self.total = 0
        self.in_flight = 0
        self.by_status_class: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.retries = 0
        self.rate_limited = 0
        self._latencies: deque[float] = deque(maxlen=window)

    def started(self) -> None:
        """Count a request as sent."""
        self.total += 1
        self.in_flight += 1

    def finished(self, elapsed: float, status: int | None = None, error: str | None = None) -> None:
        """Count a request as done, with its status or the kind of error that ended it."""
        self.in_flight -= 1
        self._latencies.append(elapsed)
        if status is not None:
            self.by_status_class[_status_class(status)] += 1
        if error is not None:
            self.errors[error] += 1

    def latency(self) -> LatencyStats:
        """Percentiles (nearest rank) of the recent window."""
        ordered = sorted(self._latencies)
        if not ordered:
            return LatencyStats(0, None, None, None)

        def pct(p: float) -> float:
            index = max(0, math.ceil(p * len(ordered)) - 1)
            return round(ordered[index] * 1000, 2)

        return LatencyStats(len(ordered), pct(0.50), pct(0.95), pct(0.99))


TREND_SLOT_SECONDS = 300
TREND_SLOTS = 12
# Origins followed at once; the one idle longest is forgotten first (/isup reaches arbitrary hosts).
MAX_TREND_ORIGINS = 32
# Upper bounds (ms) of the latency buckets each slot counts into: a p95 is read to about 30 %.
# Floats only: bisect over mixed ints and floats costs three times as much.
TREND_BOUNDS_MS = tuple(
    float(bound)
    for bound in (
        5, 10, 15, 20, 30, 40, 50, 75, 100, 150, 200, 300, 400, 500, 750,
        1000, 1500, 2000, 3000, 5000, 7500, 10_000, 20_000, 30_000, 60_000, math.inf,
    )
)  # fmt: skip


class _Slot:
    """Five minutes of one origin: requests, failures and a latency histogram (fixed size)."""

    __slots__ = ("buckets", "failed", "number", "requests")

    def __init__(self, number: int) -> None:
        self.number = number
        self.requests = 0
        self.failed = 0
        self.buckets = [0] * len(TREND_BOUNDS_MS)

    def p95_ms(self) -> float | None:
        if not self.requests:
            return None
        rank = math.ceil(0.95 * self.requests)
        seen = 0
        for bound, count in zip(TREND_BOUNDS_MS, self.buckets, strict=True):
            seen += count
            if seen >= rank:
                return bound if math.isfinite(bound) else TREND_BOUNDS_MS[-2]
        return None  # unreachable: the counts sum to `requests`


class _Ring:
    """One origin's slots, and the slot being filled (kept apart so a request finds it at once)."""

    __slots__ = ("current", "slots")

    def __init__(self) -> None:
        self.slots: list[_Slot | None] = [None] * TREND_SLOTS
        self.current = _Slot(-1)


class Trends:
    """The last hour per origin in 5-minute slots: bounded in origins and slots, O(1) per request."""

    def __init__(
        self, clock: Callable[[], float] = time.monotonic, max_origins: int = MAX_TREND_ORIGINS
    ) -> None:
        self._clock = clock
        self._max_origins = max_origins
        self._rings: dict[str, _Ring] = {}

    def record(self, origin: str, elapsed: float, *, failed: bool) -> None:
        """Count one request sent to `origin` (on every request: kept to a few attribute updates)."""
        number = int(self._clock() // TREND_SLOT_SECONDS)
        ring = self._rings.get(origin)
        if ring is None:
            ring = self._add(origin)
        slot = ring.current
        if slot.number != number:
            slot = ring.current = ring.slots[number % TREND_SLOTS] = _Slot(number)
        slot.requests += 1
        if failed:
            slot.failed += 1
        slot.buckets[bisect.bisect_left(TREND_BOUNDS_MS, elapsed * 1000)] += 1

    def _add(self, origin: str) -> _Ring:
        """A ring for a new origin; when full, the one idle longest (then the quietest) makes room."""
        if len(self._rings) >= self._max_origins:
            idle = min(
                self._rings, key=lambda o: (self._rings[o].current.number, self._rings[o].current.requests)
            )
            del self._rings[idle]
        ring = self._rings[origin] = _Ring()
        return ring

    def busiest(self, limit: int) -> tuple[OriginTrend, ...]:
        """The `limit` origins with the most requests in the last hour, each oldest slot first."""
        now = int(self._clock() // TREND_SLOT_SECONDS)
        trends = [self._trend(origin, ring.slots, now) for origin, ring in list(self._rings.items())]
        ranked = sorted((t for t in trends if t.requests), key=lambda t: (-t.requests, t.origin))
        return tuple(ranked[:limit])

    @staticmethod
    def _trend(origin: str, ring: list[_Slot | None], now: int) -> OriginTrend:
        slots = []
        for number in range(now - TREND_SLOTS + 1, now + 1):
            slot = ring[number % TREND_SLOTS]
            slots.append(slot if slot is not None and slot.number == number else None)
        return OriginTrend(
            origin=origin,
            requests=sum(s.requests for s in slots if s is not None),
            p95_ms=tuple(None if s is None else s.p95_ms() for s in slots),
            errors=tuple(None if s is None else s.failed for s in slots),
        )


SPARKS = "▁▂▃▄▅▆▇█"
NO_DATA = "·"


def sparkline(values: tuple[float | None, ...]) -> str:
    """One character per value, scaled from zero to the largest; `·` where there is no value."""
    top = max((v for v in values if v is not None), default=0.0)
    chars = []
    for value in values:
        if value is None:
            chars.append(NO_DATA)
        elif top <= 0:
            chars.append(SPARKS[0])
        else:
            # Any non-zero value rises above the baseline: one error in an hour must show.
            level = max(1 if value > 0 else 0, round(value / top * (len(SPARKS) - 1)))
            chars.append(SPARKS[level])
    return "".join(chars)
