"""Per-host rate limits and concurrency caps, against a real server."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web

from services.config import HostLimit
from services.errors import RateLimitedError
from services.http_client import http_client
from tests.services.conftest import reply


async def test_burst_against_rate_limited_host_waits_then_fails_fast(fast, fault_server):
    # One request per 0.2 s, waiting at most 0.5 s: of a burst of 10, about 3 go, the rest fail at once.
    fast(host_limits=(HostLimit("127.0.0.1", requests=1, period=0.2),), max_wait=0.5)
    url = fault_server.route("/api", reply(200, b"ok"))
    results = await asyncio.gather(*(http_client.get(url) for _ in range(10)), return_exceptions=True)
    ok = [r for r in results if not isinstance(r, BaseException)]
    limited = [r for r in results if isinstance(r, RateLimitedError)]
    assert len(ok) + len(limited) == 10
    assert 2 <= len(ok) <= 4
    assert fault_server.hits["/api"] == len(ok)  # a refused call costs the host nothing
    assert all(e.retry_after is not None and e.retry_after > 0.5 for e in limited)
    assert "rate-limiting us; try again in 1 second" in limited[0].user_message
    assert http_client.get_pool_stats().rate_limited >= 1


async def test_rate_limit_wait_longer_than_deadline_fails(fast, fault_server):
    fast(host_limits=(HostLimit("127.0.0.1", requests=1, period=60),), max_wait=30)
    url = fault_server.route("/api", reply(200))
    await http_client.get(url)
    with pytest.raises(RateLimitedError) as caught:
        await http_client.get(url, deadline=0.5)
    assert caught.value.retry_after is not None and caught.value.retry_after > 50
    assert fault_server.hits["/api"] == 1


async def test_other_hosts_are_not_limited(fast, fault_server):
    fast(host_limits=(HostLimit("crates.io", requests=1, period=60),), max_wait=0.1)
    url = fault_server.route("/api", reply(200))
    await asyncio.gather(*(http_client.get(url) for _ in range(5)))
    assert fault_server.hits["/api"] == 5


async def test_concurrency_cap_per_host(fast, local_server):
    fast(host_limits=(HostLimit("127.0.0.1", concurrency=2),))
    inside = peak = 0

    async def held(request: web.Request) -> web.Response:
        nonlocal inside, peak
        inside += 1
        peak = max(peak, inside)
        await asyncio.sleep(0.05)
        inside -= 1
        return web.Response(text="ok")

    base = await local_server({"/held": held})
    responses = await asyncio.gather(*(http_client.get(f"{base}/held") for _ in range(6)))
    assert [r.text for r in responses] == ["ok"] * 6
    assert peak == 2
