"""The pool against slow and fast servers on 127.0.0.1: bulkheads, fair service, fail fast, stats."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from loguru import logger

from services.config import HTTPSettings
from services.errors import HostBusyError
from services.http_client import http_client
from services.resilience.retry import Deadline
from services.transport.deadline import DEADLINE
from services.transport.pool import FastTransport

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


class Upstream:
    """A keep-alive HTTP/1.1 server answering every request with "ok" once `gate` is set."""

    def __init__(self, *, held: bool) -> None:
        self.gate = asyncio.Event()
        if not held:
            self.gate.set()
        self.waiting = 0
        self.answered: list[bytes] = []
        self.server: asyncio.Server | None = None
        self.url = ""

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                self.waiting += 1
                await self.gate.wait()
                self.waiting -= 1
                self.answered.append(head.split(b" ", 2)[1])
                writer.write(RESPONSE)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def release_one(self) -> None:
        """Let exactly one held request through."""
        self.gate.set()
        self.gate = asyncio.Event()


@pytest.fixture
async def upstreams() -> AsyncIterator[Callable[..., asyncio.Future[Upstream]]]:
    started: list[Upstream] = []

    async def start(*, held: bool = False) -> Upstream:
        upstream = Upstream(held=held)
        upstream.server = await asyncio.start_server(upstream._on_client, "127.0.0.1", 0)
        upstream.url = f"http://127.0.0.1:{upstream.server.sockets[0].getsockname()[1]}"
        started.append(upstream)
        return upstream

    yield start  # type: ignore[misc]
    for upstream in started:
        upstream.gate.set()
        assert upstream.server is not None
        upstream.server.close()


async def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.005)


def slots(transport: FastTransport, url: str) -> tuple[int, int, int, int]:
    counts = transport.pool_state().slots.get(url)  # the origin as the pool names it: scheme://host:port
    return (0, 0, 0, 0) if counts is None else (counts.in_flight, counts.queued, counts.limit, counts.shed)


async def test_pool_isolation_slow_origin_keeps_to_its_share_and_others_still_flow(upstreams):
    slow, fast = await upstreams(held=True), await upstreams()
    transport = FastTransport(max_connections=4, adaptive=False)
    async with httpx.AsyncClient(transport=transport, timeout=5) as client:
        stuck = [asyncio.create_task(client.get(f"{slow.url}/{i}")) for i in range(6)]
        await wait_until(lambda: slots(transport, slow.url)[:2] == (2, 4))
        # The slow origin holds its half of the pool; the other half still serves everyone else.
        answers = await asyncio.gather(*(client.get(f"{fast.url}/{i}") for i in range(5)))
        assert [r.text for r in answers] == ["ok"] * 5
        assert slow.waiting == 2
        assert slots(transport, slow.url) == (2, 4, 2, 0)
        slow.gate.set()
        await asyncio.gather(*stuck)


async def test_pool_isolation_freed_slot_serves_the_oldest_waiter_of_any_origin(upstreams):
    hog, other = await upstreams(held=True), await upstreams()
    # No per-origin cap: fair order alone must serve the other origin before the hog's later requests.
    transport = FastTransport(max_connections=2, max_connections_per_host=2, adaptive=False)
    async with httpx.AsyncClient(transport=transport, timeout=5) as client:
        held = [asyncio.create_task(client.get(f"{hog.url}/held{i}")) for i in range(2)]
        await wait_until(lambda: hog.waiting == 2)
        waiting_other = asyncio.create_task(client.get(f"{other.url}/first"))
        await wait_until(lambda: transport.pool_state().queued.get(other.url) == 1)
        later_hog = asyncio.create_task(client.get(f"{hog.url}/later"))
        await wait_until(lambda: sum(transport.pool_state().queued.values()) == 2)
        hog.release_one()
        assert (await waiting_other).text == "ok"  # before: the hog's own waiter took the freed connection
        assert not later_hog.done()
        hog.gate.set()
        await asyncio.gather(*held, later_hog)


async def test_pool_isolation_sheds_at_once_past_the_queue_bound(upstreams):
    messages: list[str] = []
    sink = logger.add(lambda message: messages.append(message.record["message"]), level="WARNING")
    slow = await upstreams(held=True)
    transport = FastTransport(max_connections=2, max_connections_per_host=1, max_queued_per_host=1)
    async with httpx.AsyncClient(transport=transport, timeout=5) as client:
        first = asyncio.create_task(client.get(f"{slow.url}/1"))
        second = asyncio.create_task(client.get(f"{slow.url}/2"))
        await wait_until(lambda: slots(transport, slow.url)[:2] == (1, 1))
        with pytest.raises(HostBusyError) as caught:
            await client.get(f"{slow.url}/3")
        assert caught.value.shed
        assert isinstance(caught.value, httpx.PoolTimeout)
        assert caught.value.user_message == "127.0.0.1 is slow right now; please try again in a minute."
        assert slots(transport, slow.url) == (1, 1, 1, 1)
        for i in range(3):
            with pytest.raises(HostBusyError):
                await client.get(f"{slow.url}/more{i}")
        assert slots(transport, slow.url)[3] == 4
        # One warning for the storm, not one per request.
        expected = "is slow: turning requests away at once (1 in flight, limit 1, 1 queued, 1 shed so far)"
        assert [m for m in messages if "turning requests away" in m] == [f"{slow.url} {expected}"]
        slow.gate.set()
        assert [r.text for r in await asyncio.gather(first, second)] == ["ok", "ok"]
        assert slots(transport, slow.url)[:2] == (0, 0)
    logger.remove(sink)


async def test_pool_isolation_queue_wait_is_a_share_of_the_deadline(upstreams):
    slow = await upstreams(held=True)
    transport = FastTransport(max_connections=2, max_connections_per_host=1)
    async with httpx.AsyncClient(transport=transport, timeout=httpx.Timeout(5, pool=10)) as client:
        first = asyncio.create_task(client.get(f"{slow.url}/1"))
        await wait_until(lambda: slow.waiting == 1)
        request = client.build_request("GET", f"{slow.url}/2")
        request.extensions = {**request.extensions, DEADLINE: Deadline(1.0)}
        with pytest.raises(HostBusyError) as caught:
            await transport.handle_async_request(request)
        assert not caught.value.shed
        # A tenth of what was left of the deadline (0.0999s on a loaded machine), not the 10 s pool timeout.
        waited = re.search(r"within ([0-9.]+)s", str(caught.value))
        assert waited is not None
        assert 0.05 < float(waited.group(1)) <= 0.1
        # The request that gave up left no trace: the slot goes to the next one.
        assert slots(transport, slow.url)[:2] == (1, 0)
        slow.gate.set()
        assert (await first).text == "ok"
        assert (await client.get(f"{slow.url}/3")).text == "ok"


async def test_pool_isolation_cancelled_waiter_returns_a_granted_slot(upstreams):
    slow = await upstreams(held=True)
    transport = FastTransport(max_connections=1, adaptive=False)
    async with httpx.AsyncClient(transport=transport, timeout=5) as client:
        first = asyncio.create_task(client.get(f"{slow.url}/1"))
        await wait_until(lambda: slow.waiting == 1)
        queued = asyncio.create_task(client.get(f"{slow.url}/2"))
        await wait_until(lambda: slots(transport, slow.url)[1] == 1)
        slow.release_one()
        await first
        queued.cancel()  # granted its slot in the same loop turn it gave up
        with pytest.raises(asyncio.CancelledError):
            await queued
        await wait_until(lambda: slots(transport, slow.url)[:2] == (0, 0))
        slow.gate.set()
        assert (await client.get(f"{slow.url}/3")).text == "ok"


async def test_pool_isolation_stats_show_limit_in_flight_and_shed_per_origin(upstreams):
    slow = await upstreams(held=True)
    settings = HTTPSettings(max_connections=2, max_keepalive_connections=2, max_queued_per_host=1, retries=0)
    http_client.configure(settings)
    stuck = [asyncio.create_task(http_client.get(f"{slow.url}/{i}")) for i in range(2)]
    await wait_until(lambda: http_client.get_pool_stats().queued == 1)
    with pytest.raises(HostBusyError):
        await http_client.get(f"{slow.url}/shed")
    (row,) = http_client.get_pool_stats().origins
    assert (row.in_flight, row.queued, row.limit, row.shed) == (1, 1, 1, 1)
    slow.gate.set()
    await asyncio.gather(*stuck)


async def test_pool_isolation_full_pool_of_idle_connections_makes_room_for_another_origin(upstreams):
    first, second = await upstreams(), await upstreams()
    transport = FastTransport(max_connections=2, max_keepalive_connections=2, max_connections_per_host=2)
    async with httpx.AsyncClient(transport=transport, timeout=5) as client:
        await asyncio.gather(*(client.get(f"{first.url}/{i}") for i in range(2)))
        assert sorted((c.origin, c.state) for c in transport.pool_state().connections) == [
            (first.url, "idle"),
            (first.url, "idle"),
        ]
        assert (await client.get(f"{second.url}/x")).text == "ok"
        assert sorted((c.origin, c.state) for c in transport.pool_state().connections) == sorted(
            [(first.url, "idle"), (second.url, "idle")]
        )
