"""State shared through a real redis-server by two services in one process (each its own RedisState)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace

import pytest
from loguru import logger

from services.config import HostLimit, HTTPSettings
from services.errors import CircuitOpenError, RateLimitedError, UpstreamRateLimitedError
from services.http_client import HTTPClient, http_client
from tests.redis_server import RedisServer
from tests.services.conftest import FAST, Seen, reply
from tests.services.state.conftest import eventually

Make = Callable[..., HTTPClient]


@pytest.fixture
async def services(redis_server: RedisServer) -> AsyncIterator[Make]:
    """Build HTTPClient services sharing the test's Redis (closed after the test)."""
    made: list[HTTPClient] = []

    def make(**overrides: object) -> HTTPClient:
        # A generous timeout: a loaded test machine is not a slow Redis.
        shared = {"redis_url": redis_server.url, "redis_timeout": 0.5, "instance": f"test-{len(made)}"}
        settings = replace(FAST, **{**shared, **overrides})  # type: ignore[arg-type]
        service = HTTPClient(settings)
        made.append(service)
        return service

    yield make
    for service in made:
        await service.close()


@pytest.fixture
def logs() -> AsyncIterator[list[str]]:
    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(str(m)), level="DEBUG", format="{level} {message}")
    yield lines  # type: ignore[misc]
    logger.remove(sink)


def github(resource: str, remaining: int) -> dict[str, str]:
    return {
        "X-RateLimit-Resource": resource,
        "X-RateLimit-Remaining": str(remaining),
        "X-RateLimit-Reset": str(int(time.time()) + 600),
    }


async def test_redis_state_configured_limit_holds_across_services(services, fault_server):
    one_per_minute = (HostLimit("127.0.0.1", requests=1, period=60),)
    first, second = services(host_limits=one_per_minute), services(host_limits=one_per_minute)
    url = fault_server.route("/api", reply(200, b"ok"))
    assert (await first.get(url)).text == "ok"
    with pytest.raises(RateLimitedError) as caught:
        await second.get(url)  # alone it would have had its own turn
    assert caught.value.retry_after is not None and caught.value.retry_after > 50
    assert fault_server.hits["/api"] == 1


async def test_redis_state_spent_quota_reaches_the_other_service(services, fault_server):
    first, second = services(), services()
    search = fault_server.route("/search/code", reply(403, headers=github("search", 0)))
    core = fault_server.route("/repos/a/b", reply(200, b"repo", github("core", 4000)))
    for service in (first, second):
        await service.get(core)  # both connected, and sharing
    with pytest.raises(UpstreamRateLimitedError):
        await first.get(search)
    await eventually(lambda: second.get_pool_stats().blocks)
    [block] = second.get_pool_stats().blocks
    assert block.partition == "resource=search" and block.seconds_left > 500
    with pytest.raises(RateLimitedError):
        await second.get(search + "?q=other")  # the path came with the block
    assert (await second.get(core)).text == "repo"
    assert fault_server.hits["/search/code"] == 1


async def test_redis_state_open_circuit_reaches_the_other_service(services, fault_server):
    first, second = services(breaker_threshold=2, retries=0), services(breaker_threshold=2, retries=0)
    url = fault_server.route("/down", reply(500))
    await second.get(url, raise_for_status=False)
    for _ in range(2):
        await first.get(url, raise_for_status=False)
    await eventually(
        lambda: (
            second.get_pool_stats().breakers.get(f"{fault_server.base}") == "open"
            or any(state == "open" for state in second.get_pool_stats().breakers.values())
        )
    )
    with pytest.raises(CircuitOpenError):
        await second.get(url)
    assert fault_server.hits["/down"] == 3


async def test_redis_state_answer_stored_by_one_serves_the_other(services, fault_server, redis_admin):
    first, second = services(), services()
    url = fault_server.route("/cached", reply(200, b"shared", {"Cache-Control": "max-age=60"}))
    await second.get(fault_server.route("/warm", reply(200)))  # connected and listening
    assert (await first.get(url)).text == "shared"
    await eventually(lambda: second.resilience.shared._known)  # the store was announced
    response = await second.get(url)
    assert response.text == "shared" and response.extensions.get("cache") == "hit"
    assert fault_server.hits["/cached"] == 1
    assert second.get_pool_stats().cache.shared_hits == second.get_pool_stats().cache.hits == 1
    assert second.pipeline.summary()["cache_hits"] == 1  # what the cluster view adds up, counted once
    keys = await redis_admin.keys("*")
    assert keys and all(key.startswith(b"courier:v1:") for key in keys)


async def test_redis_state_vary_and_credentials_keep_answers_apart(services, fault_server, redis_admin):
    first, second = services(), services()

    def echo(seen: Seen, writer: asyncio.StreamWriter):
        user = {"token-aaa": "alice", "token-bbb": "bob"}[seen.headers["authorization"]]
        body = f"{seen.headers.get('accept')}/{user}".encode()
        headers = {"Cache-Control": "private, max-age=60", "Vary": "Accept"}
        return reply(200, body, headers)(seen, writer)

    url = fault_server.route("/me", echo)
    await second.get(fault_server.route("/warm", reply(200)))
    await first.get(url, headers={"Accept": "a", "Authorization": "token-aaa"})
    await eventually(lambda: second.resilience.shared._known)
    other_token = await second.get(url, headers={"Accept": "a", "Authorization": "token-bbb"})
    assert other_token.text == "a/bob"
    other_accept = await second.get(url, headers={"Accept": "b", "Authorization": "token-aaa"})
    assert other_accept.text == "b/alice"
    same = await second.get(url, headers={"Accept": "a", "Authorization": "token-aaa"})
    assert same.text == "a/alice" and same.extensions.get("cache") == "hit"
    assert fault_server.hits["/me"] == 3
    stored = b"".join([key + (await redis_admin.dump(key) or b"") for key in await redis_admin.keys("*")])
    assert b"token-aaa" not in stored and b"token-bbb" not in stored


async def test_redis_state_answers_over_the_entry_cap_stay_local(services, fault_server, redis_admin):
    first = services(redis_cache_max_entry_bytes=1000)
    big = fault_server.route("/big", reply(200, b"x" * 2000, {"Cache-Control": "max-age=60"}))
    small = fault_server.route("/small", reply(200, b"y" * 10, {"Cache-Control": "max-age=60"}))
    await first.get(big)
    await first.get(small)
    await eventually(lambda: first.resilience.shared._known)
    assert await redis_admin.zcard("courier:v1:cache:index") == 1


async def test_redis_unreachable_at_start_warns_once_runs_local_and_resumes(idle_redis, fault_server, logs):
    settings = replace(FAST, redis_url=idle_redis.url, redis_timeout=0.5, instance="lonely")
    http_client.configure(settings)
    url = fault_server.route("/api", reply(200, b"ok"))
    for _ in range(3):
        assert (await http_client.get(url)).text == "ok"
    cluster = http_client.get_pool_stats().cluster
    assert cluster is not None and cluster.sharing == "degraded" and "redis" in cluster.detail
    warnings = [line for line in logs if line.startswith("WARNING") and "redis" in line]
    assert len(warnings) == 1
    idle_redis.start()
    await eventually(lambda: http_client.get_pool_stats().cluster.sharing == "connected")
    assert (await http_client.get(url)).text == "ok"
    assert not any("s3cret-pw" in line for line in logs)
    assert "s3cret-pw" not in repr(http_client.get_pool_stats().as_dict())
    assert "s3cret-pw" not in repr(settings)


async def test_redis_stalled_mid_traffic_requests_proceed_then_resume(services, fault_server, redis_server):
    service = services(host_limits=(HostLimit("127.0.0.1", requests=1000, period=1),), redis_timeout=0.005)
    url = fault_server.route("/api", reply(200, b"ok"))
    await service.get(url)
    assert service.get_pool_stats().cluster.sharing == "connected"
    redis_server.pause()
    try:
        results = [await service.get(url) for _ in range(20)]
        assert [r.text for r in results] == ["ok"] * 20
        cluster = service.get_pool_stats().cluster
        assert cluster.sharing == "degraded" and cluster.fallbacks >= 1
    finally:
        redis_server.resume()
    await eventually(lambda: service.get_pool_stats().cluster.sharing == "connected")
    assert (await service.get(url)).text == "ok"


async def test_redis_close_leaves_no_task_or_connection(services, fault_server, redis_admin):
    service = services(host_limits=(HostLimit("127.0.0.1", requests=1000, period=1),))
    url = fault_server.route("/api", reply(200, b"ok", {"Cache-Control": "max-age=60"}))
    await asyncio.gather(*(service.get(f"{url}?i={i}") for i in range(30)))
    assert len(await redis_admin.client_list()) > 1
    await service.close()
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("courier-redis")]
    await eventually(lambda: _count_clients(redis_admin, 1))


async def _count_clients(admin, expected: int) -> bool:
    return len(await admin.client_list()) == expected


async def test_redis_settings_default_to_in_process_state():
    settings = HTTPSettings.from_env({})
    assert settings.redis_url is None
    assert HTTPClient(settings).get_pool_stats().cluster is None


async def test_redis_state_keys_follow_the_prefix_and_other_versions_are_ignored(
    services, fault_server, redis_admin
):
    first = services(
        redis_prefix="bot-two:",
        breaker_threshold=2,
        host_limits=(HostLimit("127.0.0.1", requests=100, period=1),),
    )
    url = fault_server.route("/cached", reply(200, b"x", {"Cache-Control": "max-age=60"}))
    await first.get(url)
    await eventually(lambda: first.resilience.shared._known)
    keys = await redis_admin.keys("*")
    assert keys and all(key.startswith(b"bot-two:v1:") for key in keys)
    # A message of another format version (a newer or older process) changes nothing here.
    future = '{"v": 2, "from": "x", "kind": "circuit", "origin": "http://a:80", "until": 9999999999}'
    await redis_admin.publish("bot-two:v1:events", future)
    await redis_admin.publish("bot-two:v1:events", "not json")
    current = future.replace('"v": 2', '"v": 1').replace("http://a:80", "http://b:80")
    await redis_admin.publish("bot-two:v1:events", current)
    await eventually(lambda: first.get_pool_stats().breakers)
    assert first.get_pool_stats().breakers == {"http://b:80": "open"}  # only the version-1 message counted
    assert first.get_pool_stats().cluster.sharing == "connected"


async def test_redis_state_a_probe_that_succeeds_closes_the_others_circuits(services, fault_server):
    # The first half-opens quickly; the second would stay open (then half-open, unprobed) for a minute.
    first = services(breaker_threshold=2, breaker_cooldown=0.2, retries=0)
    second = services(breaker_threshold=2, breaker_cooldown=60, retries=0)
    url = fault_server.route("/flaky", reply(500), reply(500), reply(500), reply(200, b"back"))
    await second.get(fault_server.route("/warm", reply(200)))
    for _ in range(2):
        await first.get(url, raise_for_status=False)
    await eventually(lambda: "open" in second.get_pool_stats().breakers.values())
    await asyncio.sleep(0.25)
    await first.get(url, raise_for_status=False)  # the probe fails: open again, and said so
    await asyncio.sleep(0.25)
    assert (await first.get(url)).text == "back"  # this probe succeeds
    await eventually(lambda: second.get_pool_stats().breakers == {})
    assert (await second.get(url)).text == "back"
