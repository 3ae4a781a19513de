"""close() drains: no new requests, in-flight ones finish or are cancelled at the deadline."""

from __future__ import annotations

import asyncio
import time

import pytest

from services.errors import ClientClosingError
from services.http_client import http_client
from tests.services.conftest import hang, reply


async def until(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.005)


async def test_close_waits_for_in_flight_requests(fast, fault_server):
    url = fault_server.route("/slow", reply(200, b"done", delay=0.2))
    pending = asyncio.create_task(http_client.get(url))
    await until(lambda: fault_server.hits["/slow"] == 1)
    await http_client.close()
    assert (await pending).text == "done"
    assert http_client.get_pool_stats().client_open is False


async def test_new_requests_fail_while_closing(fast, fault_server):
    url = fault_server.route("/slow", reply(200, b"done", delay=0.2))
    pending = asyncio.create_task(http_client.get(url))
    await until(lambda: fault_server.hits["/slow"] == 1)
    closing = asyncio.create_task(http_client.close())
    await asyncio.sleep(0)
    with pytest.raises(ClientClosingError) as caught:
        await http_client.get(url)
    assert "shutting down" in caught.value.user_message
    await closing
    assert (await pending).text == "done"
    # Once close has completed, the next use builds a fresh client.
    assert (await http_client.get(url)).text == "done"


async def test_close_cancels_requests_past_the_drain_deadline(fast, fault_server):
    fast(drain_timeout=0.1, read_timeout=30)
    url = fault_server.route("/hang", hang())
    stream_url = fault_server.route("/stream", hang())
    pending = asyncio.create_task(http_client.get(url))
    await until(lambda: fault_server.hits["/hang"] == 1)

    async def streaming() -> None:
        async with http_client.stream("GET", stream_url):
            pass

    streamer = asyncio.create_task(streaming())
    await until(lambda: fault_server.hits["/stream"] == 1)
    await asyncio.wait_for(http_client.close(), 5)
    with pytest.raises(ClientClosingError):
        await pending
    with pytest.raises(ClientClosingError):
        await streamer
    stats = http_client.get_pool_stats()
    assert stats.client_open is False
    assert stats.in_flight == 0


async def test_other_cancellations_stay_cancellations(fast, fault_server):
    url = fault_server.route("/hang", hang())
    pending = asyncio.create_task(http_client.get(url))
    await until(lambda: fault_server.hits["/hang"] == 1)
    pending.cancel()
    with pytest.raises(asyncio.CancelledError):
        await pending
