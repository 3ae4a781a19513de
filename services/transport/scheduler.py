"""Who gets the pool's next slot: bulkheads per origin, fair order across origins, adaptive limits.

A pure unit, with no sockets and no event loop: the pool asks it for slots and tells it when one is
freed, and it names the waiter to serve next through a callback. A slot is one request holding (or
opening) a connection; idle connections hold none, since the pool may always close one of them.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from services.stats import SlotCounts

K = TypeVar("K", bound=Hashable)
P = TypeVar("P")

# Origins remembered with nothing in flight and nothing queued, for their learned limit and counters;
# past this many, such an origin is forgotten when its last slot comes back (a bot may look up any host).
MAX_IDLE_ORIGINS = 256
# Gradient2's defaults (Netflix concurrency-limits): how far the limit may grow per sample while
# latency holds, how much of each new estimate is taken, and the long RTT's averaging window.
GROWTH = 4.0
SMOOTHING = 0.2
LONG_WINDOW = 600
WARMUP = 10
# However slow an origin gets, it keeps this fraction of its share: enough to answer a few requests
# while it recovers, few enough that several slow origins at once still leave most of the pool free.
MIN_LIMIT_DIVISOR = 5
# The recent RTT, for predicting queue waits, follows samples this fast.
RECENT_WEIGHT = 0.2


class GradientLimit:
    """A concurrency limit that shrinks as an origin's latency climbs above its usual, and grows back.

    Netflix concurrency-limits' Gradient2 (github.com/Netflix/concurrency-limits, `Gradient2Limit`; the
    idea is TCP Vegas's: queueing shows as RTT above the no-load RTT, RFC 6582 §1 has the background):
    gradient = clamp(long RTT / this RTT, 0.5, 1); new = limit * gradient + GROWTH, smoothed by SMOOTHING.
    The limit only moves while the origin uses at least half of it, so a quiet origin keeps its share.
    """

    __slots__ = ("estimate", "long_rtt", "max_limit", "min_limit", "recent_rtt", "samples")

    def __init__(self, initial: int, min_limit: int, max_limit: int) -> None:
        self.estimate = float(initial)
        self.min_limit = min_limit
        self.max_limit = max_limit
        self.long_rtt = 0.0
        self.recent_rtt = 0.0
        self.samples = 0

    @property
    def limit(self) -> int:
        """The whole number of slots the origin may hold now."""
        return int(self.estimate)

    def sample(self, rtt: float, in_flight: int) -> bool:
        """Learn from one exchange that took `rtt` seconds while `in_flight` slots were held.

        Returns whether the estimate moved. Runs once per request, hence the locals and plain branches.
        """
        if rtt <= 0.0:
            return False
        samples = self.samples = self.samples + 1
        long_rtt = self.long_rtt
        if samples <= WARMUP:
            long_rtt += (rtt - long_rtt) / samples
            self.recent_rtt = long_rtt
        else:
            long_rtt += (rtt - long_rtt) / LONG_WINDOW
            self.recent_rtt += (rtt - self.recent_rtt) * RECENT_WEIGHT
        if long_rtt > 2 * rtt:
            # Latency came back down after a long slow spell: let the baseline follow it quickly.
            long_rtt *= 0.9
        self.long_rtt = long_rtt
        estimate = self.estimate
        if in_flight < estimate / 2:
            return False  # limited by demand, not by the origin: nothing learned about its capacity
        gradient = long_rtt / rtt
        gradient = 0.5 if gradient < 0.5 else 1.0 if gradient > 1.0 else gradient
        estimate = estimate * (1 - SMOOTHING) + (estimate * gradient + GROWTH) * SMOOTHING
        if estimate < self.min_limit:
            estimate = float(self.min_limit)
        elif estimate > self.max_limit:
            estimate = float(self.max_limit)
        self.estimate = estimate
        return True


class Ticket(Generic[K, P]):
    """One queued request: its origin, its place in the global order, and what the pool attached."""

    __slots__ = ("key", "payload", "seq", "state")

    def __init__(self, key: K, seq: int, payload: P) -> None:
        self.key = key
        self.seq = seq
        self.payload = payload
        self.state = 0  # 0 waiting, 1 granted, 2 cancelled


WAITING, GRANTED, CANCELLED = 0, 1, 2


class _Origin(Generic[K, P]):
    """What the scheduler keeps per origin."""

    __slots__ = ("busy", "heap_seq", "key", "limit", "limiter", "live", "queue", "shed")

    def __init__(self, key: K, limit: int, limiter: GradientLimit) -> None:
        self.key = key
        self.busy = 0
        self.limit = limit
        self.limiter = limiter
        self.queue: deque[Ticket[K, P]] = deque()
        self.live = 0  # waiting tickets in `queue`; cancelled ones leave lazily
        self.shed = 0
        self.heap_seq = -1  # the sequence this origin is listed under in the ready heap, or -1


class SlotScheduler(Generic[K, P]):
    """Slots of a pool of `capacity`, at most `per_origin` per origin, served oldest-first across origins.

    Waiters queue per origin (FIFO); a heap lists the origins that could take a slot, keyed by the
    sequence of their oldest waiter, so a freed slot goes to the oldest waiter whose origin is under
    its limit, whatever origin freed it. Every step costs O(1), or O(log origins with waiters) when
    the whole pool is busy; no step looks at every queued request.

    An origin's learned (adaptive) limit binds only while another origin holds or waits for a slot:
    it exists to leave room for the others, and with nobody else using the pool it would only make the
    lone origin's requests queue (on a loop the client itself saturates, its latency climbs with its own
    concurrency, and Gradient2 can't tell that from a slow origin). Alone, an origin is held to its share.
    """

    def __init__(
        self,
        capacity: int,
        per_origin: int,
        max_queued: int,
        grant: Callable[[Ticket[K, P]], None],
        *,
        adaptive: bool = True,
    ) -> None:
        self.capacity = capacity
        self.per_origin = max(1, min(per_origin, capacity))
        self.max_queued = max_queued
        self.adaptive = adaptive
        self.busy = 0
        self.queued = 0
        self._grant = grant
        self._origins: dict[K, _Origin[K, P]] = {}
        self._ready: list[tuple[int, K]] = []
        # Origins left out of the ready heap at their learned limit: when the pool's other users go
        # idle, that limit stops binding and they are listed again.
        self._limited: dict[K, None] = {}
        self._seq = 0

    def _cap(self, st: _Origin[K, P]) -> int:
        """The slots `st` may hold now: its learned limit while others use the pool, else its share."""
        if self.busy != st.busy or self.queued != st.live:
            return st.limit
        return self.per_origin

    def _origin(self, key: K) -> _Origin[K, P]:
        st = self._origins.get(key)
        if st is None:
            cap = self.per_origin
            limiter = GradientLimit(cap, max(1, cap // MIN_LIMIT_DIVISOR), cap)
            st = self._origins[key] = _Origin(key, cap, limiter)
        return st

    def try_acquire(self, key: K) -> bool:
        """Take a slot for `key` now if that jumps no queue; False means the caller must `enqueue`."""
        st = self._origins.get(key)
        if st is None:
            st = self._origin(key)
        # After every step no waiter could take a slot, so a free one here bypasses no one.
        if st.live or self.busy >= self.capacity:
            return False
        if st.busy >= st.limit and (st.busy >= self.per_origin or self.busy != st.busy or self.queued):
            return False
        st.busy += 1
        self.busy += 1
        return True

    def enqueue(self, key: K, payload: P, budget: float | None = None) -> Ticket[K, P] | None:
        """Queue a request for `key`; None if shed (its queue is full, or its wait would pass `budget`)."""
        st = self._origin(key)
        if st.live >= self.max_queued or (
            budget is not None and self.expected_wait(st, st.live + 1) > budget
        ):
            st.shed += 1
            return None
        self._seq += 1
        ticket: Ticket[K, P] = Ticket(key, self._seq, payload)
        st.queue.append(ticket)
        st.live += 1
        self.queued += 1
        if st.busy < self._cap(st):
            self._list_ready(st)
            self._dispatch()
        else:
            self._limited[key] = None
        return ticket

    @staticmethod
    def expected_wait(st: _Origin[K, P], position: int) -> float:
        """Seconds until the `position`-th waiter of `st` gets a slot, at the origin's recent pace."""
        return position * st.limiter.recent_rtt / max(1, st.limit)

    def cancel(self, ticket: Ticket[K, P]) -> None:
        """Forget a waiting ticket (timed out, or its caller went away)."""
        if ticket.state != WAITING:
            return
        ticket.state = CANCELLED
        st = self._origins[ticket.key]
        st.live -= 1
        self.queued -= 1
        queue = st.queue
        while queue and queue[0].state != WAITING:
            queue.popleft()
        if len(queue) > 2 * st.live + 16:
            # Cancelled tickets in the middle leave lazily; don't let a timeout storm pile them up.
            st.queue = deque(t for t in queue if t.state == WAITING)
        if not st.live and not st.busy:
            self._maybe_forget(st)
            if self.queued and self._limited:
                self._relist_limited()

    def release(self, key: K, rtt: float | None = None) -> None:
        """Give back a slot of `key`, learning from `rtt` (seconds the exchange took) if given."""
        st = self._origins[key]
        if rtt is not None and st.limiter.sample(rtt, st.busy) and self.adaptive:
            st.limit = int(st.limiter.estimate)
        st.busy -= 1
        self.busy -= 1
        if st.live:
            if st.busy < self._cap(st):
                self._list_ready(st)
            else:
                self._limited[key] = None
            self._dispatch()
            return
        if self._limited:
            self._limited.pop(key, None)  # nothing of this origin waits
            if self.queued and not st.busy:
                self._relist_limited()  # this origin went idle: the ones left may be alone now
        if self.queued:
            self._dispatch()
        if not st.busy and len(self._origins) > MAX_IDLE_ORIGINS:
            self._maybe_forget(st)

    def _relist_limited(self) -> None:
        """List again the limited origins whose cap rose (the pool's other users went idle)."""
        for key in list(self._limited):
            st = self._origins.get(key)
            if st is None or not st.live:
                del self._limited[key]
            elif st.busy < self._cap(st):
                del self._limited[key]
                self._list_ready(st)
        self._dispatch()

    def _list_ready(self, st: _Origin[K, P]) -> None:
        if st.heap_seq < 0:
            seq = st.queue[0].seq
            st.heap_seq = seq
            heapq.heappush(self._ready, (seq, st.key))

    def _dispatch(self) -> None:
        """Grant slots to the oldest waiters of origins under their limit while the pool has room."""
        ready = self._ready
        while ready and self.busy < self.capacity:
            seq, key = heapq.heappop(ready)
            st = self._origins.get(key)
            if st is None or st.heap_seq != seq:
                continue  # a stale listing
            st.heap_seq = -1
            if not st.live:
                continue
            if st.busy >= self._cap(st):
                self._limited[key] = None
                continue
            head = st.queue[0]
            if head.seq != seq:  # its listed head was cancelled: list it again in its true place
                self._list_ready(st)
                continue
            st.queue.popleft()
            queue = st.queue
            while queue and queue[0].state != WAITING:
                queue.popleft()
            st.live -= 1
            self.queued -= 1
            st.busy += 1
            self.busy += 1
            head.state = GRANTED
            if st.live:
                if st.busy < self._cap(st):
                    self._list_ready(st)
                else:
                    self._limited[key] = None
            self._grant(head)

    def _maybe_forget(self, st: _Origin[K, P]) -> None:
        if len(self._origins) > MAX_IDLE_ORIGINS and st.heap_seq < 0:
            del self._origins[st.key]

    def drain(self) -> list[Ticket[K, P]]:
        """Cancel and return every waiting ticket (the pool is closing)."""
        waiting = [t for st in self._origins.values() for t in st.queue if t.state == WAITING]
        for ticket in waiting:
            self.cancel(ticket)
        self._ready.clear()
        self._limited.clear()
        for st in self._origins.values():
            st.heap_seq = -1
        return waiting

    def snapshot(self) -> dict[K, SlotCounts]:
        """Per origin: slots held, requests queued, the limit binding now, requests shed so far."""
        cap = self._cap
        return {key: SlotCounts(st.busy, st.live, cap(st), st.shed) for key, st in self._origins.items()}

    def snapshot_of(self, key: K) -> SlotCounts:
        """One origin's figures, as in `snapshot`."""
        st = self._origin(key)
        return SlotCounts(st.busy, st.live, self._cap(st), st.shed)

    def limit_of(self, key: K) -> int:
        """The number of slots `key` may hold now."""
        st = self._origins.get(key)
        return self.per_origin if st is None else self._cap(st)

    def queued_for(self, key: K) -> int:
        """How many requests for `key` are waiting."""
        st = self._origins.get(key)
        return 0 if st is None else st.live


def default_share(max_connections: int) -> int:
    """The slots one origin may hold by default: half the pool, so one slow host leaves the rest free."""
    return max(1, math.ceil(max_connections / 2))
