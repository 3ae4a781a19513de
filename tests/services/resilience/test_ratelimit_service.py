"""Per-host rate limits and concurrency caps, against a real server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable

import httpx
import pytest
from aiohttp import web

from services.config import HostLimit
from services.errors import RateLimitedError, ServerError, UpstreamRateLimitedError
from services.http_client import http_client
from services.resilience import ratelimit
from services.resilience.ratelimit import HostLimiter
from services.stats import BlockStats
from tests.services.conftest import FaultServer, Seen, reply


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


def github(resource: str, remaining: int, reset_in: int = 1800) -> dict[str, str]:
    """GitHub's quota headers for `resource`."""
    return {
        "X-RateLimit-Resource": resource,
        "X-RateLimit-Remaining": str(remaining),
        "X-RateLimit-Reset": str(int(time.time()) + reset_in),
    }


async def test_spent_search_quota_blocks_search_paths_only(fast, fault_server):
    core = fault_server.route("/repos/a/b", reply(200, b"repo", github("core", 4999)))
    search = fault_server.route("/search/code", reply(403, headers=github("search", 0)), reply(200))
    await http_client.get(core)
    with pytest.raises(UpstreamRateLimitedError):
        await http_client.get(search + "?q=one")
    # The path declared `search` and that partition is spent: refused here, whatever the query says.
    with pytest.raises(RateLimitedError) as caught:
        await http_client.get(search + "?q=two")
    assert not isinstance(caught.value, UpstreamRateLimitedError)
    assert caught.value.retry_after is not None and caught.value.retry_after > 1700
    assert "resource=search" in str(caught.value)
    assert (await http_client.get(core)).text == "repo"
    assert fault_server.hits["/search/code"] == 1
    assert fault_server.hits["/repos/a/b"] == 2


async def test_retry_after_without_partition_blocks_its_origin_not_another_port(fast, fault_server):
    other = FaultServer()
    await other.start()
    try:
        fault_server.route("/a", reply(429, headers={"Retry-After": "3600"}))
        fault_server.route("/b", reply(200))
        with pytest.raises(UpstreamRateLimitedError):
            await http_client.get(f"{fault_server.base}/a")
        with pytest.raises(RateLimitedError):  # every path of that origin
            await http_client.get(f"{fault_server.base}/b")
        assert fault_server.hits["/b"] == 0
        other.route("/a", reply(200, b"other port"))
        assert (await http_client.get(f"{other.base}/a")).text == "other port"
    finally:
        await other.close()


async def test_retry_after_on_503_blocks_the_origin(fast, fault_server):
    url = fault_server.route("/down", reply(503, headers={"Retry-After": "3600"}))
    with pytest.raises(ServerError):
        await http_client.get(url)
    with pytest.raises(RateLimitedError):
        await http_client.get(url)
    assert fault_server.hits["/down"] == 1


async def test_spent_quota_blocks_only_the_credential_that_spent_it(fast, fault_server):
    def by_token(seen: Seen, writer: asyncio.StreamWriter) -> Awaitable[None]:
        spent = seen.headers.get("authorization") == "token aaa"
        status, remaining = (403, 0) if spent else (200, 10)
        return reply(status, b"ok", github("core", remaining))(seen, writer)

    url = fault_server.route("/user", by_token)
    with pytest.raises(UpstreamRateLimitedError):
        await http_client.get(url, headers={"Authorization": "token aaa"})
    assert (await http_client.get(url, headers={"Authorization": "token bbb"})).text == "ok"
    assert (await http_client.get(url)).text == "ok"
    with pytest.raises(RateLimitedError):
        await http_client.get(url, headers={"Authorization": "token aaa"})
    assert fault_server.hits["/user"] == 3
    [block] = http_client.get_pool_stats().blocks
    assert block.origin == fault_server.base
    assert block.partition == "resource=core"
    assert block.credential and "aaa" not in block.credential
    assert block.seconds_left > 1700
    assert "aaa" not in repr(http_client.get_pool_stats().as_dict())


async def test_ietf_ratelimit_spent_policy_blocks_the_paths_that_declared_it(fast, fault_server):
    spent = {"RateLimit-Policy": '"daily";q=100;w=86400', "RateLimit": '"daily";r=0;t=600'}
    daily = fault_server.route("/daily", reply(429, headers=spent))
    other = fault_server.route("/other", reply(200, b"fine", {"RateLimit": '"burst";r=9;t=1'}))
    with pytest.raises(RateLimitedError) as first:  # its retry is refused here: the policy is spent
        await http_client.get(daily)
    assert first.value.retry_after is not None and first.value.retry_after > 590
    with pytest.raises(RateLimitedError):
        await http_client.get(daily)
    assert (await http_client.get(other)).text == "fine"
    assert fault_server.hits["/daily"] == 1
    [block] = http_client.get_pool_stats().blocks
    assert block.partition == "policy=daily"
    assert 590 < block.seconds_left <= 600


def _answer(url: str, headers: dict[str, str], status: int = 200) -> httpx.Response:
    return httpx.Response(status, headers=headers, request=httpx.Request("GET", url))


async def test_limiter_discord_bucket_and_partition_key_digest():
    limiter = HostLimiter(())
    bucket = {"X-RateLimit-Bucket": "abcd", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset-After": "30"}
    limiter.observe(_answer("https://discord.test/api/channels/1/messages", bucket))
    pk = {"RateLimit": '"user";r=0;t=60;pk=:c2VjcmV0LXVzZXI=:'}
    limiter.observe(_answer("https://api.test/x", pk))
    blocks = {b.partition: b for b in limiter.blocks()}
    assert set(blocks) == {"bucket=abcd", f"policy=user;pk={blocks_pk(blocks)}"}
    assert "c2VjcmV0" not in repr(blocks)
    request = httpx.Request("GET", "https://discord.test/api/channels/1/messages?after=5")
    with pytest.raises(RateLimitedError):
        await limiter.acquire(request, budget=1.0)
    release = await limiter.acquire(httpx.Request("GET", "https://discord.test/api/guilds/1"), budget=1.0)
    release()


def blocks_pk(blocks: dict[str, BlockStats]) -> str:
    """The digest the limiter made of the partition key."""
    [key] = [p for p in blocks if p.startswith("policy=user;pk=")]
    return key.removeprefix("policy=user;pk=")


async def test_limiter_remembers_a_bounded_number_of_paths(monkeypatch):
    monkeypatch.setattr(ratelimit, "MAX_REMEMBERED_PATHS", 3)
    limiter = HostLimiter(())
    for n in range(5):
        limiter.observe(_answer(f"https://api.test/p{n}", {"X-RateLimit-Resource": "core"}))
    limiter.observe(_answer("https://api.test/p4", github("core", 0)))
    # /p0 and /p1 were forgotten: their partition is unknown, so they go; /p2 is known and refused.
    release = await limiter.acquire(httpx.Request("GET", "https://api.test/p0"), budget=1.0)
    release()
    with pytest.raises(RateLimitedError):
        await limiter.acquire(httpx.Request("GET", "https://api.test/p2"), budget=1.0)
