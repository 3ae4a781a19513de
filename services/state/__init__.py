"""The state the pipeline's steps keep beyond one call, behind small interfaces.

In-process by default (`local.py`); with `REDIS_URL`, shared by every process through Redis
(`redis_store.py`). The steps only ever talk to these Protocols, so either plugs in unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from services.config import HTTPSettings
    from services.resilience.ratelimit import Scope
    from services.stats import ClusterStats

BlockSink = Callable[["Scope", float, str], None]
# (origin, seconds until it half-opens); 0 seconds: the circuit closed.
CircuitSink = Callable[[str, float], None]
Snapshot = Callable[[], dict[str, Any]]


class Turns(Protocol):
    """Turns for hosts with a configured rate (GCRA): this process's, or the cluster's."""

    async def reserve(self, host: str, interval: float, burst: float, delay: float, budget: float) -> float:
        """Take `host`'s next turn, no sooner than `delay`, unless over `budget` off; return the wait."""
        ...


class Peers(Protocol):
    """Tells the other processes what this one learned; never blocks, never raises."""

    def block_learned(self, scope: Scope, wait: float, path: str) -> None:
        """`scope` asked us to stay away `wait` more seconds; `path` declared its partition."""
        ...

    def circuit_opened(self, origin: str, wait: float) -> None:
        """The circuit for `origin` opened; it half-opens in `wait` seconds."""
        ...

    def circuit_closed(self, origin: str) -> None:
        """A probe to `origin` succeeded: its circuit is closed again."""
        ...


class CacheTier(Protocol):
    """A GET cache tier behind the in-process one, holding encoded entries until they go stale."""

    @property
    def enabled(self) -> bool:
        """Whether stores are worth making at all."""
        ...

    @property
    def announced(self) -> int:
        """How many entries this tier is known to hold (0: no lookup is worth making)."""
        ...

    def may_hold(self, key: str) -> bool:
        """Whether an entry for `key` was announced and has not expired: only then is `get` worth a trip."""
        ...

    async def get(self, key: str) -> bytes | None:
        """The encoded entry stored under `key`, or None (absent, or the tier is unavailable)."""
        ...

    def put(self, key: str, blob: bytes, ttl: float) -> None:
        """Store `blob` under `key` for `ttl` seconds, in the background."""
        ...


class SharedState(Protocol):
    """Everything the steps keep that may be shared, with its lifecycle."""

    turns: Turns
    peers: Peers
    cache_tier: CacheTier
    # True until the first call on a loop has started whatever the state needs (a connection).
    needs_start: bool

    def attach(self, on_block: BlockSink, on_circuit: CircuitSink, snapshot: Snapshot) -> None:
        """Where what other processes learned lands, and where this process's figures come from."""
        ...

    async def start(self) -> None:
        """Start sharing on the running loop; returns once the first connection attempt is settled."""
        ...

    def cluster(self) -> ClusterStats | None:
        """Every process's figures, or None when nothing is shared."""
        ...

    async def close(self) -> None:
        """Stop sharing and release every task and connection; the next use starts anew."""
        ...


def build_state(settings: HTTPSettings) -> SharedState:
    """The in-process state, or the Redis-backed one when `REDIS_URL` is set."""
    if settings.redis_url:
        from services.state.redis_store import RedisState  # noqa: PLC0415 (redis loads only when used)

        return RedisState(settings)
    from services.state.local import LocalState  # noqa: PLC0415

    return LocalState()
