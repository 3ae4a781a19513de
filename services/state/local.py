"""The in-process state: what every process keeps when nothing is shared (the default)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from services.state import BlockSink, CacheTier, CircuitSink, Peers, Snapshot, Turns

if TYPE_CHECKING:
    from services.resilience.ratelimit import Scope
    from services.stats import ClusterStats


class LocalTurns:
    """Generic cell rate algorithm in memory: the time the next request may go out, per host."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._next_at: dict[str, float] = {}
        self._lock = threading.Lock()

    async def reserve(self, host: str, interval: float, burst: float, delay: float, budget: float) -> float:
        """Take `host`'s next turn, no sooner than `delay`, unless over `budget` off; return the wait."""
        return self.take(host, interval, burst, delay, budget)

    def take(self, host: str, interval: float, burst: float, delay: float, budget: float) -> float:
        """`reserve` without a coroutine, for callers already holding the answer's parts."""
        now = self._clock()
        with self._lock:
            next_at = max(self._next_at.get(host, now), now)
            wait = max(delay, next_at - burst - now)
            if wait <= budget:
                self._next_at[host] = max(next_at, now + wait) + interval
            return wait


class NoPeers:
    """Tells no one: a single process."""

    def block_learned(self, scope: Scope, wait: float, path: str) -> None:
        """Nothing to tell."""

    def circuit_opened(self, origin: str, wait: float) -> None:
        """Nothing to tell."""

    def circuit_closed(self, origin: str) -> None:
        """Nothing to tell."""


class NoCacheTier:
    """No second tier: the in-process cache is all there is."""

    enabled = False
    announced = 0

    def may_hold(self, key: str) -> bool:
        """Never."""
        return False

    async def get(self, key: str) -> bytes | None:
        """Never anything."""
        return None

    def put(self, key: str, blob: bytes, ttl: float) -> None:
        """Kept nowhere."""


class LocalState:
    """State kept in this process only; starting and closing cost nothing."""

    needs_start = False

    def __init__(self) -> None:
        self.turns: Turns = LocalTurns()
        self.peers: Peers = NoPeers()
        self.cache_tier: CacheTier = NoCacheTier()

    def attach(self, on_block: BlockSink, on_circuit: CircuitSink, snapshot: Snapshot) -> None:
        """Nothing arrives from elsewhere."""

    async def start(self) -> None:
        """Nothing to start."""

    def cluster(self) -> ClusterStats | None:
        """No cluster: this process's own figures are the whole picture."""
        return None

    async def close(self) -> None:
        """Nothing to release."""
