"""The last hour per origin: 5-minute slots, bounded memory, sparklines that read at a glance."""

from __future__ import annotations

from dataclasses import replace

from aiohttp import web

from services.http_client import http_client
from services.stats import (
    MAX_TREND_ORIGINS,
    NO_DATA,
    TREND_SLOT_SECONDS,
    TREND_SLOTS,
    Trends,
    sparkline,
)
from tests.conftest import ServerFactory
from tests.services.conftest import FAST


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def test_trends_slots_hold_p95_and_errors_oldest_first() -> None:
    clock = Clock()
    trends = Trends(clock)
    for _ in range(19):
        trends.record("https://a:443", 0.040, failed=False)
    trends.record("https://a:443", 2.0, failed=True)  # the slowest 5 %: p95 stays in the 40 ms bucket
    clock.now += TREND_SLOT_SECONDS
    trends.record("https://a:443", 0.9, failed=True)
    (trend,) = trends.busiest(5)
    assert trend.requests == 21
    assert len(trend.p95_ms) == len(trend.errors) == TREND_SLOTS
    assert trend.p95_ms[-2:] == (40, 1000)
    assert trend.errors[-2:] == (1, 1)
    assert set(trend.p95_ms[:-2]) == {None}


def test_trends_slots_older_than_an_hour_are_forgotten() -> None:
    clock = Clock()
    trends = Trends(clock)
    trends.record("https://a:443", 0.01, failed=True)
    clock.now += TREND_SLOT_SECONDS * (TREND_SLOTS - 1)
    assert trends.busiest(5)[0].errors[0] == 1
    clock.now += TREND_SLOT_SECONDS
    assert trends.busiest(5) == ()  # nothing left in the hour shown


def test_trends_a_reused_ring_position_starts_a_fresh_slot() -> None:
    clock = Clock()
    trends = Trends(clock)
    trends.record("https://a:443", 5.0, failed=True)
    clock.now += TREND_SLOT_SECONDS * TREND_SLOTS  # same position in the ring, an hour later
    trends.record("https://a:443", 0.01, failed=False)
    (trend,) = trends.busiest(5)
    assert (trend.requests, trend.errors[-1], trend.p95_ms[-1]) == (1, 0, 10)


def test_trends_origins_are_bounded_the_one_idle_longest_forgotten_first() -> None:
    clock = Clock()
    trends = Trends(clock, max_origins=3)
    for origin in ("a", "b", "c"):
        trends.record(origin, 0.01, failed=False)
        clock.now += TREND_SLOT_SECONDS
    trends.record("a", 0.01, failed=False)  # a is busy again: b has been idle longest
    trends.record("d", 0.01, failed=False)
    assert {t.origin for t in trends.busiest(10)} == {"a", "c", "d"}
    assert MAX_TREND_ORIGINS <= 64


def test_trends_busiest_first_and_limited() -> None:
    trends = Trends(Clock())
    for origin, count in (("quiet", 1), ("busy", 5), ("mid", 3)):
        for _ in range(count):
            trends.record(origin, 0.01, failed=False)
    assert [t.origin for t in trends.busiest(2)] == ["busy", "mid"]


def test_sparkline_scales_to_the_largest_and_marks_gaps() -> None:
    assert sparkline((0.0, 1.0, 7.0, None)) == f"▁▂█{NO_DATA}"
    assert sparkline((0.0, 0.0)) == "▁▁"
    assert sparkline((None, None)) == NO_DATA * 2
    assert sparkline((1.0, 100.0)) == "▂█"  # small but non-zero still rises above the baseline


async def test_trends_count_each_attempt_sent_and_5xx_or_errors_as_failures(
    local_server: ServerFactory,
) -> None:
    calls = 0

    async def flaky(request: web.Request) -> web.Response:
        nonlocal calls
        calls += 1
        return web.Response(status=503 if calls == 1 else 200, text="ok")

    async def missing(request: web.Request) -> web.Response:
        return web.Response(status=404)

    base = await local_server({"/flaky": flaky, "/missing": missing})
    http_client.configure(replace(FAST, retries=1))
    await http_client.get(f"{base}/flaky", cache=False)
    await http_client.get(f"{base}/missing", raise_for_status=False)
    (trend,) = http_client.get_pool_stats().trends
    assert trend.origin == base
    assert (trend.requests, trend.errors[-1]) == (3, 1)  # a 404 is an answer, not a failure
