"""A host that keeps failing opens its circuit, then recovers through exactly one probe."""

from __future__ import annotations

import asyncio
import time

import pytest

from services.errors import CircuitOpenError, NotFoundError, ServerError, UpstreamUnavailableError
from services.http_client import http_client
from tests.services.conftest import reply


async def wait_for_state(origin: str, state: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while http_client.get_pool_stats().breakers.get(origin, "closed") != state:
        assert time.monotonic() < deadline, f"{origin} never became {state}"
        await asyncio.sleep(0.02)


async def test_circuit_opens_then_recovers_through_one_probe(fast, fault_server):
    fast(breaker_threshold=3, breaker_cooldown=0.3, retries=0)
    url = fault_server.route("/down", reply(503), reply(503), reply(503), reply(200, b"back", delay=0.1))
    for _ in range(3):
        with pytest.raises(ServerError):
            await http_client.get(url)
    origin = f"{fault_server.base}"
    assert http_client.get_pool_stats().breakers == {origin: "open"}

    with pytest.raises(CircuitOpenError) as caught:
        await http_client.get(url)
    assert isinstance(caught.value, UpstreamUnavailableError)
    assert "unavailable" in caught.value.user_message
    assert fault_server.hits["/down"] == 3  # failing fast: the host saw nothing

    await wait_for_state(origin, "half_open")
    results = await asyncio.gather(*(http_client.get(url) for _ in range(5)), return_exceptions=True)
    assert fault_server.hits["/down"] == 4  # exactly one probe went through
    assert sum(not isinstance(r, BaseException) for r in results) == 1
    assert sum(isinstance(r, CircuitOpenError) for r in results) == 4
    assert http_client.get_pool_stats().breakers == {}
    assert (await http_client.get(url)).text == "back"


async def test_failed_probe_reopens_the_circuit(fast, fault_server):
    fast(breaker_threshold=2, breaker_cooldown=0.2, retries=0)
    url = fault_server.route("/down", reply(500))
    for _ in range(2):
        with pytest.raises(ServerError):
            await http_client.get(url)
    (origin,) = http_client.get_pool_stats().breakers
    await wait_for_state(origin, "half_open")
    with pytest.raises(ServerError):
        await http_client.get(url)  # the probe
    assert http_client.get_pool_stats().breakers == {origin: "open"}
    assert fault_server.hits["/down"] == 3


async def test_client_errors_do_not_open_the_circuit(fast, fault_server):
    fast(breaker_threshold=2, retries=0)
    url = fault_server.route("/missing", reply(404))
    for _ in range(4):
        with pytest.raises(NotFoundError):
            await http_client.get(url)
    assert http_client.get_pool_stats().breakers == {}
    assert fault_server.hits["/missing"] == 4


async def test_connection_errors_open_the_circuit(fast, refused_port):
    fast(breaker_threshold=2, retries=0)
    url = f"http://127.0.0.1:{refused_port}/"
    for _ in range(2):
        with pytest.raises(UpstreamUnavailableError):
            await http_client.get(url)
    with pytest.raises(CircuitOpenError):
        await http_client.get(url)
    assert http_client.get_pool_stats().breakers == {f"http://127.0.0.1:{refused_port}": "open"}
