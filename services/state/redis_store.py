"""State shared by every process through Redis, mirrored locally so a request never waits on it.

- Configured host limits: one GCRA per host in a Lua script (one round trip, atomic, Redis's clock).
- Learned blocks and open circuits: published on a channel and kept in a hash for late joiners; each
  process mirrors them into its own memory, where the request path reads them.
- GET cache: a second tier of encoded entries expiring with their freshness, capped per entry and in
  total (a script evicts the soonest-expiring entries first).
- Statistics: each process writes its figures under its own key with an expiry, and reads the others'.

Redis never fails a request: each call on a request's path is bounded by `COURIER_REDIS_TIMEOUT` and
falls back to the local state; one failure marks sharing degraded (no more calls from requests) until
a background task has reconnected, with backoff. Keys live under `COURIER_REDIS_PREFIX` + `v1:`; values
carry their format version; nothing secret (no token, no Authorization value) is written.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import json
import random
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar, cast
from urllib.parse import urlsplit

from loguru import logger

from services.config import HTTPSettings
from services.redact import redact_url
from services.resilience.ratelimit import Scope
from services.state import BlockSink, CacheTier, CircuitSink, Peers, Snapshot, Turns
from services.state.local import LocalTurns
from services.stats import ClusterStats, ProcessStats

if TYPE_CHECKING:
    import redis.asyncio as aioredis
    from redis.commands.core import AsyncScript

T = TypeVar("T")

FORMAT = 1
# How long the first call on a loop waits for the first connection, so a cluster starts shared.
FIRST_CONNECT_WAIT = 2.0
# Bounds on background work (publishing, cache stores, statistics), which no request waits for.
BACKGROUND_TIMEOUT = 1.0
RECONNECT_MIN, RECONNECT_MAX = 0.25, 5.0
STATS_EVERY = 1.0
STATS_TTL = 5
MAX_PROCESSES = 64
# Past this many calls at once, a request falls back to local state instead of waiting for a connection
# (a blocking pool costs ~15 us of CPU per call; redis-py's plain one raises MaxConnectionsError).
MAX_CONNECTIONS = 64
# Timeouts in a row on a request's path before sharing counts as degraded (one may be a busy loop).
MAX_TIMEOUTS = 3
# Shared cache entries this process knows exist; a request asks Redis only for those.
MAX_KNOWN_ENTRIES = 10_000
# How long the news of a closed circuit stays worth reading (for processes that reconnect meanwhile).
CLOSED_NEWS = 60.0
# Longest wait a peer's message may impose: bounds what a bad message could do.
MAX_PEER_WAIT = 86_400.0

# GCRA (theoretical arrival time per key, in microseconds of Redis's clock). ARGV: interval, burst,
# delay, budget (us). Returns the wait in us; a wait over the budget takes no turn.
GCRA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local wait = tat - tonumber(ARGV[2]) - now
if tonumber(ARGV[3]) > wait then wait = tonumber(ARGV[3]) end
if wait < 0 then wait = 0 end
if wait > tonumber(ARGV[4]) then return wait end
local after = tat
if now + wait > after then after = now + wait end
after = after + tonumber(ARGV[1])
redis.call('SET', KEYS[1], string.format('%.0f', after), 'PX', math.ceil((after - now) / 1000) + 1000)
return wait
"""

# Keep an event for late joiners (hash field, expiring with the latest event) and tell the others now.
# KEYS: hash. ARGV: field, message, milliseconds it matters, channel.
ANNOUNCE = """
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[3]) then redis.call('PEXPIRE', KEYS[1], ARGV[3]) end
return redis.call('PUBLISH', ARGV[4], ARGV[2])
"""

# Store a cache entry under the total cap and tell the others it exists. KEYS: entry, index (zset key ->
# expiry ms), sizes (hash), total. ARGV: blob, ttl ms, max total bytes, channel, message. Expired
# entries are forgotten, then the soonest-expiring evicted until the new one fits.
CACHE_PUT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local size = string.len(ARGV[1])
local cap = tonumber(ARGV[3])
local function forget(key)
  local old = tonumber(redis.call('HGET', KEYS[3], key) or '0')
  redis.call('HDEL', KEYS[3], key)
  redis.call('ZREM', KEYS[2], key)
  redis.call('DEL', key)
  if old > 0 then redis.call('DECRBY', KEYS[4], old) end
end
forget(KEYS[1])
for _, key in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, 100)) do forget(key) end
local total = tonumber(redis.call('GET', KEYS[4]) or '0')
while total + size > cap do
  local soonest = redis.call('ZRANGE', KEYS[2], 0, 0)
  if #soonest == 0 then break end
  forget(soonest[1])
  total = tonumber(redis.call('GET', KEYS[4]) or '0')
end
if total + size > cap then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), KEYS[1])
redis.call('HSET', KEYS[3], KEYS[1], size)
redis.call('INCRBY', KEYS[4], size)
redis.call('PUBLISH', ARGV[4], ARGV[5])
return 1
"""


def _raise_if_cancelling() -> None:
    """Honour a cancellation that a library swallowed (redis-py may, mid-command), instead of waiting on."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def _stop(tasks: Sequence[asyncio.Future[Any]]) -> None:
    """Cancel `tasks` and wait for them, cancelling again any that swallowed it (bounded)."""
    for _ in range(5):
        pending = [task for task in tasks if not task.done()]
        if not pending:
            break
        for task in pending:
            task.cancel()
        await asyncio.wait(pending, timeout=BACKGROUND_TIMEOUT)
    else:
        logger.warning("redis: {} background task(s) would not stop", sum(not t.done() for t in tasks))
    for task in tasks:  # read each outcome: asyncio logs an error for an exception nobody retrieved
        if task.done() and not task.cancelled():
            task.exception()


def _us(seconds: float) -> int:
    return int(seconds * 1_000_000)


def _text(value: Any, limit: int) -> str | None:
    """A string field of a peer's message, or None when it isn't one or is implausibly long."""
    return value if isinstance(value, str) and len(value) <= limit else None


class RedisState:
    """Turns, peers, cache tier and statistics kept in Redis; in-process state while it is away."""

    def __init__(self, settings: HTTPSettings) -> None:
        assert settings.redis_url is not None
        self._url = settings.redis_url
        self.backend = redact_url(settings.redis_url)
        self._password = urlsplit(settings.redis_url).password or ""
        self._prefix = f"{settings.redis_prefix}v{FORMAT}:"
        self._channel = self._prefix + "events"
        self.timeout = settings.redis_timeout
        self.instance = settings.instance
        self._node = uuid.uuid4().hex[:12]  # tells our own messages apart, even if two share a name
        self._entry_cap = settings.redis_cache_max_entry_bytes
        self._total_cap = settings.redis_cache_max_bytes
        self._local_turns = LocalTurns()
        self.turns: Turns = self
        self.peers: Peers = self
        self.cache_tier: CacheTier = self
        self.needs_start = True
        self.healthy = False
        self.fallbacks = 0
        self._timeouts = 0
        self._known: dict[str, float] = {}
        self._state = "connecting"
        self._detail = ""
        self._redis: aioredis.Redis | None = None
        self._scripts: dict[str, AsyncScript] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._first: asyncio.Event | None = None
        self._wake: asyncio.Event | None = None
        self._broken: asyncio.Event | None = None
        self._events: deque[tuple[str, str, str, int]] = deque(maxlen=1024)
        self._stores: deque[tuple[str, bytes, int]] = deque(maxlen=64)
        self._peers: tuple[ProcessStats, ...] = ()
        self._on_block: BlockSink | None = None
        self._on_circuit: CircuitSink | None = None
        self._snapshot: Snapshot | None = None

    # --- lifecycle -------------------------------------------------------------------------------

    def attach(self, on_block: BlockSink, on_circuit: CircuitSink, snapshot: Snapshot) -> None:
        """Where what other processes learned lands, and where this process's figures come from."""
        self._on_block, self._on_circuit, self._snapshot = on_block, on_circuit, snapshot

    async def start(self) -> None:
        """Connect in the background; the first callers wait (briefly) for the first attempt."""
        if self._task is None:
            self._loop = asyncio.get_running_loop()
            self._first, self._wake, self._broken = asyncio.Event(), asyncio.Event(), asyncio.Event()
            self._task = self._loop.create_task(self._supervise(), name="courier-redis")
        if asyncio.get_running_loop() is not self._loop:
            self.needs_start = False  # another loop: it runs on its own state
            return
        assert self._first is not None
        try:
            async with asyncio.timeout(FIRST_CONNECT_WAIT):
                await self._first.wait()
        except TimeoutError:
            pass
        self.needs_start = False

    async def close(self) -> None:
        """Stop the background task, which closes the connections; the next use starts anew."""
        task, self._task = self._task, None
        self.healthy, self.needs_start = False, True
        if task is None:
            return
        if task.get_loop() is asyncio.get_running_loop():
            await _stop([task])
        elif not task.get_loop().is_closed():
            task.get_loop().call_soon_threadsafe(task.cancel)

    def _usable(self) -> bool:
        """Whether a request may call Redis now: connected, and on the loop that owns the connections."""
        if not self.healthy:
            return False
        try:
            return asyncio.get_running_loop() is self._loop
        except RuntimeError:
            return False

    def _fail(self, what: str, exc: BaseException) -> None:
        """A call on a request's path failed: degrade (one warning) and let the supervisor reconnect."""
        self.fallbacks += 1
        if type(exc).__name__ == "MaxConnectionsError":
            return  # a burst beyond the pool: this call runs locally, Redis is fine
        if isinstance(exc, TimeoutError):
            self._timeouts += 1
            if self._timeouts < MAX_TIMEOUTS:
                return
        if self.healthy:
            self._down(what, exc)
            if self._broken is not None:
                self._broken.set()

    def _down(self, what: str, exc: BaseException) -> None:
        was = self._state
        self.healthy = False
        self._state = "degraded"
        self._peers = ()  # unknown until read again: the view shows this process alone meanwhile
        self._detail = f"redis {what} failed ({self._describe(exc)}); running on in-process state"
        if was != "degraded":
            logger.warning("{} at {}; reconnecting in the background", self._detail, self.backend)

    def _describe(self, exc: BaseException) -> str:
        text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        return text.replace(self._password, "REDACTED") if self._password else text

    async def _supervise(self) -> None:
        """Connect, serve until something breaks, reconnect with backoff; forever, until cancelled."""
        backoff = RECONNECT_MIN
        try:
            while True:
                try:
                    pubsub = await self._connect()
                except Exception as exc:
                    self._down("connection", exc)
                    self._settle_first()
                    await asyncio.sleep(backoff * random.uniform(0.8, 1.2))
                    backoff = min(backoff * 2, RECONNECT_MAX)
                    continue
                backoff = RECONNECT_MIN
                self._settle_first()
                try:
                    await self._serve(pubsub)
                except Exception as exc:
                    self._down("connection", exc)
                finally:
                    await self._disconnect(pubsub)
        finally:
            self.healthy = False
            await self._disconnect(None)

    def _settle_first(self) -> None:
        if self._first is not None and not self._first.is_set():
            self._first.set()
            self.needs_start = False

    async def _connect(self) -> aioredis.client.PubSub:
        # Importing redis-py takes 0.3-2 s of CPU: in a thread, so the loop (and Discord's heartbeat) runs on.
        module = await asyncio.to_thread(importlib.import_module, "redis.asyncio")
        pool = module.ConnectionPool.from_url(
            self._url, max_connections=MAX_CONNECTIONS, socket_connect_timeout=BACKGROUND_TIMEOUT
        )
        client: aioredis.Redis = module.Redis(connection_pool=pool)
        self._redis = client
        self._scripts = {
            "gcra": client.register_script(GCRA),
            "announce": client.register_script(ANNOUNCE),
            "cache_put": client.register_script(CACHE_PUT),
        }
        async with asyncio.timeout(BACKGROUND_TIMEOUT):
            await client.ping()
            for script in self._scripts.values():  # loaded now, so a request's first call is one round trip
                await client.script_load(script.script)
            pubsub: aioredis.client.PubSub = client.pubsub(ignore_subscribe_messages=True)
            await pubsub.subscribe(self._channel)
            for name in ("blocks", "circuits"):  # what was announced while we were away or not yet born
                for raw in (await client.hgetall(self._prefix + name)).values():
                    self._receive(raw)
            index = self._prefix + "cache:index"
            now_ms = time.time() * 1000
            entries = await client.zrangebyscore(index, now_ms, "+inf", 0, MAX_KNOWN_ENTRIES, withscores=True)
            for key, expiry in cast("list[tuple[bytes, float]]", entries):
                self._know(key.decode(), float(expiry) / 1000)
        was = self._state
        self.healthy, self._state, self._detail = True, "connected", ""
        if was == "degraded":
            logger.info("redis is back at {}: sharing state again", self.backend)
        else:
            logger.info("sharing state through redis at {} as {}", self.backend, self.instance)
        return pubsub

    async def _serve(self, pubsub: aioredis.client.PubSub) -> None:
        """Listen, flush and report until one of them fails or a request's call did."""
        assert self._broken is not None
        self._broken.clear()
        tasks = [
            asyncio.ensure_future(self._listen(pubsub)),
            asyncio.ensure_future(self._flush()),
            asyncio.ensure_future(self._report()),
            asyncio.ensure_future(self._broken.wait()),
        ]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            await _stop(tasks)
        # Read every outcome (asyncio logs an error for an exception nobody retrieved); raise the first.
        errors = [t.exception() for t in tasks if t.done() and not t.cancelled() and t.exception()]
        if errors and errors[0] is not None:
            raise errors[0]
        raise ConnectionError("a call on a request's path failed")

    async def _disconnect(self, pubsub: aioredis.client.PubSub | None) -> None:
        client, self._redis = self._redis, None
        try:
            if pubsub is not None:
                await pubsub.aclose()  # type: ignore[no-untyped-call]
            if client is not None:
                await client.aclose()
                await client.connection_pool.disconnect()
        except Exception as exc:  # closing a broken connection may fail too; it is gone either way
            logger.debug("redis: closing a connection failed: {}", self._describe(exc))

    async def _background(self, call: Awaitable[T]) -> T:
        async with asyncio.timeout(BACKGROUND_TIMEOUT):
            return await call

    # --- turns (configured host limits) ----------------------------------------------------------

    async def reserve(self, host: str, interval: float, burst: float, delay: float, budget: float) -> float:
        """The cluster's next turn for `host`; this process's own while Redis is away."""
        if self._usable():
            try:
                async with asyncio.timeout(self.timeout):
                    # EVALSHA itself (loaded on connect): the Script wrapper costs ~8 us of CPU per call.
                    wait = await self._redis.evalsha(  # type: ignore[union-attr]
                        self._scripts["gcra"].sha,
                        1,
                        f"{self._prefix}gcra:{host}",
                        _us(interval),
                        _us(burst),
                        _us(delay),
                        _us(budget),
                    )
                self._timeouts = 0
                return int(wait) / 1_000_000
            except Exception as exc:
                self._fail("rate limit", exc)
        return self._local_turns.take(host, interval, burst, delay, budget)

    # --- peers (learned blocks, open circuits) ---------------------------------------------------

    def block_learned(self, scope: Scope, wait: float, path: str) -> None:
        """Announce a block, with the path that declared its partition (no credential: only its digest)."""
        until = time.time() + wait
        message = {
            "kind": "block",
            "origin": scope.origin,
            "partition": scope.partition,
            "credential": scope.credential,
            "path": path,
            "until": until,
        }
        field = json.dumps([scope.origin, scope.partition, scope.credential])
        self._announce("blocks", field, message, wait)

    def circuit_opened(self, origin: str, wait: float) -> None:
        """Announce an open circuit."""
        self._announce(
            "circuits", origin, {"kind": "circuit", "origin": origin, "until": time.time() + wait}, wait
        )

    def circuit_closed(self, origin: str) -> None:
        """Announce a closed circuit (it replaces the open one late joiners would read)."""
        message = {"kind": "circuit", "origin": origin, "until": time.time() + CLOSED_NEWS, "closed": True}
        self._announce("circuits", origin, message, CLOSED_NEWS)

    def _announce(self, table: str, field: str, message: dict[str, Any], wait: float) -> None:
        body = json.dumps({"v": FORMAT, "from": self._node, **message}, separators=(",", ":"))
        self._events.append((table, field, body, max(1, int(wait * 1000))))
        self._kick()

    def _kick(self) -> None:
        wake, loop = self._wake, self._loop
        if wake is None or loop is None or loop.is_closed():
            return
        try:
            same = asyncio.get_running_loop() is loop
        except RuntimeError:
            same = False
        if same:
            wake.set()
        else:
            loop.call_soon_threadsafe(wake.set)

    async def _flush(self) -> None:
        """Send queued announcements and cache stores; on failure they stay queued for the next connection."""
        assert self._wake is not None
        while True:
            while self._events:
                table, field, body, ms = self._events[0]
                await self._background(
                    self._scripts["announce"](
                        keys=[self._prefix + table], args=[field, body, ms, self._channel]
                    )
                )
                self._events.popleft()
            while self._stores:
                key, blob, ms = self._stores.popleft()
                until = time.time() + ms / 1000
                news = {"v": FORMAT, "from": self._node, "kind": "cached", "key": key, "until": until}
                stored = await self._background(
                    self._scripts["cache_put"](
                        keys=[key, *(self._prefix + f"cache:{part}" for part in ("index", "sizes", "total"))],
                        args=[blob, ms, self._total_cap, self._channel, json.dumps(news)],
                    )
                )
                if stored:
                    self._know(key, until)
            self._wake.clear()
            _raise_if_cancelling()
            await self._wake.wait()

    async def _listen(self, pubsub: aioredis.client.PubSub) -> None:
        async for message in pubsub.listen():
            if message.get("type") == "message":
                self._receive(message["data"])

    def _receive(self, raw: bytes | str) -> None:
        """Mirror another process's announcement into local state; ignore anything malformed or ours."""
        try:
            message = json.loads(raw)
            until = float(message["until"])
        except (ValueError, TypeError, KeyError):
            return
        if not isinstance(message, dict) or message.get("v") != FORMAT or message.get("from") == self._node:
            return
        wait = min(until - time.time(), MAX_PEER_WAIT)
        kind, origin = message.get("kind"), _text(message.get("origin"), 300)
        if wait <= 0:
            return
        if kind == "cached":
            key = _text(message.get("key"), 200)
            if key is not None and key.startswith(self._prefix):
                self._know(key, until)
        elif origin is None:
            return
        elif kind == "circuit" and self._on_circuit is not None:
            self._on_circuit(origin, 0.0 if message.get("closed") is True else wait)
        elif kind == "block" and self._on_block is not None:
            partition = _text(message.get("partition"), 200)
            credential = _text(message.get("credential"), 64)
            path = _text(message.get("path"), 2048)
            if partition is not None and credential is not None and path is not None:
                self._on_block(Scope(origin, partition, credential), wait, path)

    # --- cache tier ------------------------------------------------------------------------------

    @property
    def enabled(self) -> bool:
        """Whether the shared tier takes anything at all."""
        return self._entry_cap > 0 and self._total_cap > 0

    @property
    def announced(self) -> int:
        """Shared entries this process has heard of (some may have expired since)."""
        return len(self._known)

    def may_hold(self, key: str) -> bool:
        """Whether an entry for `key` was announced and is still fresh."""
        redis_key = self._cache_key(key)
        until = self._known.get(redis_key)
        if until is None:
            return False
        if until <= time.time():
            del self._known[redis_key]
            return False
        return True

    def _cache_key(self, key: str) -> str:
        # The key holds the URL and a credential digest; hashed again so neither is readable in Redis.
        return self._prefix + "cache:" + hashlib.sha256(key.encode()).hexdigest()

    async def get(self, key: str) -> bytes | None:
        """The shared entry under `key`, or None (absent, or Redis away or slow)."""
        if not self._usable() or not self.may_hold(key):
            return None
        assert self._redis is not None
        redis_key = self._cache_key(key)
        try:
            async with asyncio.timeout(self.timeout):
                found = await self._redis.get(redis_key)
            self._timeouts = 0
            return found if isinstance(found, bytes) else None
        except Exception as exc:
            self._fail("cache read", exc)
            return None

    def _know(self, redis_key: str, until: float) -> None:
        self._known.pop(redis_key, None)
        self._known[redis_key] = until
        if len(self._known) > MAX_KNOWN_ENTRIES:
            del self._known[next(iter(self._known))]

    def put(self, key: str, blob: bytes, ttl: float) -> None:
        """Queue `blob` for the shared tier when it fits the entry cap."""
        if len(blob) <= self._entry_cap and ttl > 0:
            self._stores.append((self._cache_key(key), blob, max(1, int(ttl * 1000))))
            self._kick()

    # --- statistics ------------------------------------------------------------------------------

    async def _report(self) -> None:
        """Publish this process's figures with an expiry, and read every process's."""
        assert self._redis is not None
        client = self._redis
        key = f"{self._prefix}stats:{self.instance}"
        while True:
            mine = {"v": FORMAT, "instance": self.instance, "at": time.time(), **self._figures()}
            await self._background(client.set(key, json.dumps(mine), ex=STATS_TTL))
            keys: list[bytes] = []
            async with asyncio.timeout(BACKGROUND_TIMEOUT):
                async for found in client.scan_iter(match=f"{self._prefix}stats:*", count=100):
                    keys.append(found)
                    if len(keys) >= MAX_PROCESSES:
                        break
            values = await self._background(client.mget(keys)) if keys else []
            self._peers = tuple(sorted(filter(None, map(_process, values)), key=lambda p: p.instance))
            _raise_if_cancelling()
            await asyncio.sleep(STATS_EVERY)

    def _figures(self) -> dict[str, Any]:
        return self._snapshot() if self._snapshot is not None else {}

    def cluster(self) -> ClusterStats:
        """Every process's last figures (this one's live), totals, and whether sharing works."""
        mine = _process(
            json.dumps({"v": FORMAT, "instance": self.instance, "at": time.time(), **self._figures()})
        )
        rows = [p for p in self._peers if p.instance != self.instance]
        rows = sorted([*rows, *([mine] if mine is not None else [])], key=lambda p: p.instance)
        return ClusterStats(
            sharing=self._state,
            backend=self.backend,
            instance=self.instance,
            processes=tuple(rows),
            requests_total=sum(p.requests_total for p in rows),
            in_flight=sum(p.in_flight for p in rows),
            errors=sum(p.errors for p in rows),
            rate_limited=sum(p.rate_limited for p in rows),
            cache_hits=sum(p.cache_hits for p in rows),
            fallbacks=self.fallbacks,
            detail=self._detail,
        )


def _process(raw: bytes | str | None) -> ProcessStats | None:
    """One process's published figures, or None when malformed or of another format."""
    if raw is None:
        return None
    try:
        data = json.loads(raw)
        if data.get("v") != FORMAT:
            return None
        numbers = {
            name: int(data.get(name, 0))
            for name in (
                "requests_total",
                "in_flight",
                "errors",
                "rate_limited",
                "cache_hits",
                "blocks",
                "open_circuits",
            )
        }
        return ProcessStats(
            instance=str(data["instance"])[:100], age=max(0.0, time.time() - float(data["at"])), **numbers
        )
    except (ValueError, TypeError, KeyError, AttributeError):
        return None
