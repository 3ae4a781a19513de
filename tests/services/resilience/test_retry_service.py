"""Retries, waits, deadlines, size caps and bad bodies, shown on real sockets."""

from __future__ import annotations

import asyncio
import email.utils
import gzip
import re
import time

import httpx
import pytest
from loguru import logger

from services.errors import (
    BadResponseError,
    ConnectionFailedError,
    DeadlineExceededError,
    HostBusyError,
    RateLimitedError,
    ResponseTooLargeError,
    ServerError,
    TimedOutError,
    UpstreamRateLimitedError,
)
from services.http_client import http_client
from tests.services.conftest import endless, hang, reply, reset_mid_body, trickle


@pytest.fixture
def warnings():
    lines: list[str] = []
    sink = logger.add(lines.append, level="WARNING", format="{message}")
    yield lines
    logger.remove(sink)


async def test_retry_503_then_200_succeeds(fast, fault_server, warnings):
    url = fault_server.route("/flaky", reply(503), reply(200, b"ok"))
    response = await http_client.get(url, params={"api_key": "sk-secret"})
    assert response.text == "ok"
    assert fault_server.hits["/flaky"] == 2
    stats = http_client.get_pool_stats()
    assert stats.retries == 1
    assert stats.requests_total == 1
    assert any("-> 503; retry 1/2" in line and "api_key=REDACTED" in line for line in warnings)
    assert not any("sk-secret" in line for line in warnings)


async def test_retry_429_honours_retry_after_seconds(fast, fault_server, warnings):
    url = fault_server.route("/limited", reply(429, headers={"Retry-After": "1"}), reply(200, b"ok"))
    assert (await http_client.get(url)).text == "ok"
    assert fault_server.hits["/limited"] == 2
    assert any("-> 429; retry 1/2 in 1.00s" in line for line in warnings)


async def test_retry_429_honours_retry_after_http_date(fast, fault_server, warnings):
    when = email.utils.formatdate(time.time() + 2, usegmt=True)
    url = fault_server.route("/dated", reply(429, headers={"Retry-After": when}), reply(200, b"ok"))
    assert (await http_client.get(url)).text == "ok"
    assert fault_server.hits["/dated"] == 2
    waits = [float(line.rsplit(" in ", 1)[1].strip().rstrip("s")) for line in warnings if "-> 429" in line]
    assert len(waits) == 1
    assert 0.5 < waits[0] <= 2  # the date has one-second resolution; the backoff would be < 0.05 s


async def test_retry_after_beyond_cap_fails_at_once(fast, fault_server):
    url = fault_server.route("/later", reply(429, headers={"Retry-After": "3600"}), reply(200))
    with pytest.raises(UpstreamRateLimitedError) as caught:
        await http_client.get(url)
    assert caught.value.retry_after == 3600
    assert "1 hour" in caught.value.user_message
    assert fault_server.hits["/later"] == 1


async def test_github_quota_exhausted_fails_fast_and_is_remembered(fast, fault_server):
    reset = str(int(time.time()) + 1800)
    quota = {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": reset}
    url = fault_server.route("/repos/a/b", reply(403, headers=quota), reply(200))
    with pytest.raises(UpstreamRateLimitedError) as caught:
        await http_client.get(url)
    assert caught.value.retry_after is not None and caught.value.retry_after > 1700
    # The next call doesn't spend a request the host already said it would refuse.
    with pytest.raises(RateLimitedError) as again:
        await http_client.get(url)
    assert again.value.retry_after is not None and again.value.retry_after > 1700
    assert fault_server.hits["/repos/a/b"] == 1


async def test_connection_reset_mid_body_is_retried(fast, fault_server):
    url = fault_server.route("/reset", reset_mid_body(), reply(200, b"whole"))
    assert (await http_client.get(url)).text == "whole"
    assert fault_server.hits["/reset"] == 2


async def test_connection_reset_every_time_raises_connection_failed(fast, fault_server):
    url = fault_server.route("/reset", reset_mid_body())
    with pytest.raises(ConnectionFailedError):
        await http_client.get(url)
    assert fault_server.hits["/reset"] == 3
    assert http_client.get_pool_stats().retries == 2


async def test_body_trickling_slower_than_read_timeout_times_out(fast, fault_server):
    fast(read_timeout=0.1, retries=1)
    url = fault_server.route("/trickle", trickle(interval=0.3))
    with pytest.raises(TimedOutError) as caught:
        await http_client.get(url)
    assert isinstance(caught.value, httpx.TimeoutException)
    assert fault_server.hits["/trickle"] == 2


async def test_deadline_bounds_attempts_and_waits(fast, fault_server):
    fast(read_timeout=30)
    url = fault_server.route("/hang", hang())
    with pytest.raises(DeadlineExceededError) as caught:
        await http_client.get(url, deadline=0.2)
    assert isinstance(caught.value, TimedOutError)
    assert "deadline" in str(caught.value)
    assert fault_server.hits["/hang"] == 1


async def test_deadline_cuts_a_body_that_keeps_trickling_within_the_read_timeout(fast, fault_server):
    fast(read_timeout=0.2, retries=0)  # shorter than the deadline: each byte restarts the read timer
    url = fault_server.route("/trickle", trickle(interval=0.05, size=200))
    with pytest.raises(DeadlineExceededError):
        await http_client.get(url, deadline=0.5)


async def test_deadline_bounds_the_wait_for_a_pooled_connection(fast, fault_server):
    fast(max_connections=1, max_keepalive_connections=1, pool_timeout=10.0, read_timeout=10.0, retries=0)
    hung = fault_server.route("/hang", hang())
    url = fault_server.route("/ok", reply(200, b"ok"))
    holder = asyncio.create_task(http_client.get(hung, deadline=5))
    for _ in range(200):  # bounded wait until the only connection is taken
        if fault_server.hits["/hang"]:
            break
        await asyncio.sleep(0.01)
    # The queue may take a tenth of what is left of the deadline: the request fails then, typed.
    with pytest.raises(HostBusyError) as caught:
        await http_client.get(url, deadline=0.2)
    assert isinstance(caught.value, httpx.PoolTimeout)
    waited = re.search(r"within ([0-9.]+)s", str(caught.value))
    assert waited is not None
    assert 0.01 < float(waited.group(1)) <= 0.02  # a tenth of what was left of 0.2 s
    holder.cancel()
    with pytest.raises(asyncio.CancelledError):
        await holder
    assert fault_server.hits["/ok"] == 0


async def test_deadline_covers_a_streamed_head_not_its_body(fast, fault_server):
    fast(read_timeout=1.0, retries=0)
    # The body takes 1.5 s, past the 1 s deadline; the head comes at once (room for a loaded machine).
    url = fault_server.route("/trickle", trickle(interval=0.15, size=10))
    async with http_client.stream("GET", url, deadline=1.0) as response:
        body = await response.aread()
    assert body == b"x" * 10


async def test_endless_body_is_cut_at_the_size_cap(fast, fault_server):
    url = fault_server.route("/endless", endless())
    with pytest.raises(ResponseTooLargeError) as caught:
        await http_client.get(url, max_bytes=256 * 1024)
    assert "262144-byte cap" in str(caught.value)
    assert fault_server.hits["/endless"] == 1  # a cap is not a reason to try again
    assert http_client.get_pool_stats().in_flight == 0


async def test_declared_length_over_cap_fails_before_reading(fast, fault_server):
    fast(max_response_bytes=2048)
    url = fault_server.route("/big", reply(200, b"z" * 4096))
    with pytest.raises(ResponseTooLargeError):
        await http_client.get(url)
    assert len((await http_client.get(url, max_bytes=None)).content) == 4096


async def test_stream_applies_the_size_cap_while_iterating(fast, fault_server):
    url = fault_server.route("/endless", endless(chunk=16 * 1024))
    received = 0

    async def download() -> None:
        nonlocal received
        async with http_client.stream("GET", url, max_bytes=100_000) as response:
            async for chunk in response.aiter_bytes():
                received += len(chunk)

    with pytest.raises(ResponseTooLargeError):
        await download()
    assert received <= 100_000  # a transport may hand over more than the cap in its first chunk


async def test_endless_redirect_body_is_cut_at_the_size_cap(fast, fault_server):
    fast(max_response_bytes=100_000)
    url = fault_server.route("/hop", endless(status=302, headers={"Location": "/never"}))
    with pytest.raises(ResponseTooLargeError):
        await http_client.get(url)
    with pytest.raises(ResponseTooLargeError):
        async with http_client.stream("GET", url):
            pass
    assert fault_server.hits["/never"] == 0
    assert http_client.get_pool_stats().in_flight == 0


async def test_compressed_body_is_capped_once_decoded(fast, fault_server):
    packed = gzip.compress(b"0" * 1_000_000)
    url = fault_server.route("/bomb", reply(200, packed, {"Content-Encoding": "gzip"}))
    with pytest.raises(ResponseTooLargeError):
        await http_client.get(url, max_bytes=100_000)
    assert len((await http_client.get(url, max_bytes=2_000_000)).content) == 1_000_000


async def test_get_json_invalid_body_raises_bad_response(fast, fault_server):
    url = fault_server.route("/json", reply(200, b"{not json", {"Content-Type": "application/json"}))
    with pytest.raises(BadResponseError) as caught:
        await http_client.get_json(url)
    assert "could not understand" in caught.value.user_message


async def test_redirect_loop_raises_bad_response(fast, fault_server):
    fast(max_redirects=3)
    url = fault_server.route("/loop", reply(302, headers={"Location": "/loop"}))
    with pytest.raises(BadResponseError, match="too many redirects"):
        await http_client.get(url)
    assert fault_server.hits["/loop"] == 4


async def test_post_is_not_retried(fast, fault_server):
    url = fault_server.route("/submit", reply(503), reply(200))
    with pytest.raises(ServerError):
        await http_client.post(url, json={"x": 1})
    assert fault_server.hits["/submit"] == 1


async def test_post_with_idempotency_key_is_retried(fast, fault_server):
    url = fault_server.route("/submit", reply(503), reply(201))
    response = await http_client.post(url, json={"x": 1}, idempotency_key="order-42")
    assert response.status_code == 201
    assert fault_server.hits["/submit"] == 2
    assert [s.headers["idempotency-key"] for s in fault_server.seen] == ["order-42", "order-42"]


async def test_retries_zero_per_call_sends_once(fast, fault_server):
    url = fault_server.route("/flaky", reply(503), reply(200))
    response = await http_client.get(url, retries=0, raise_for_status=False)
    assert response.status_code == 503
    assert fault_server.hits["/flaky"] == 1
