"""Prometheus metrics: OpenTelemetry names and labels, bounded values, figures read live at scrape time."""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from bot.metrics import OTHER, BotMetrics, RequestDurations, split_origin
from services.config import HTTPSettings
from services.http_client import http_client
from services.observers import OBSERVERS, RequestEvent
from services.resilience.ratelimit import Scope
from tests.conftest import ServerFactory


@dataclass
class FakeBot:
    latency: float = math.nan
    guilds: list[object] = field(default_factory=list)


@pytest.fixture
async def metrics() -> AsyncIterator[BotMetrics]:
    """Metrics observing the shared client for the test."""
    m = BotMetrics(FakeBot(latency=0.042, guilds=[object(), object()]), http_client)
    m.install()
    yield m
    m.uninstall()


def samples(m: BotMetrics, name: str) -> list[Sample]:
    """Every sample whose name is `name`, parsed from the rendered text as Prometheus would."""
    text = m.render().decode()
    return [s for family in text_string_to_metric_families(text) for s in family.samples if s.name == name]


def event(host: str, port: int = 443, method: str = "GET", status: int | None = 200) -> RequestEvent:
    return RequestEvent(method, "https", host, port, status, None, 0.01)


async def test_metrics_histogram_one_observation_per_request_with_otel_labels(
    metrics: BotMetrics, local_server: ServerFactory
) -> None:
    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def missing(request: web.Request) -> web.Response:
        return web.Response(status=404)

    base = await local_server({"/ok": ok, "/missing": missing})
    port = base.rsplit(":", 1)[1]
    await http_client.get(f"{base}/ok", cache=False)
    await http_client.get(f"{base}/ok", cache=False)
    await http_client.get(f"{base}/missing", raise_for_status=False)
    await http_client.request("PURGE", f"{base}/ok", raise_for_status=False)
    counts = {
        (
            s.labels["http_request_method"],
            s.labels["http_response_status_code"],
            s.labels["error_type"],
        ): s.value
        for s in samples(metrics, "http_client_request_duration_seconds_count")
    }
    assert counts == {("GET", "200", ""): 2, ("GET", "404", "404"): 1, (OTHER, "200", ""): 1}
    labels = samples(metrics, "http_client_request_duration_seconds_count")[0].labels
    assert (labels["server_address"], labels["server_port"]) == ("127.0.0.1", port)
    buckets = {s.labels["le"] for s in samples(metrics, "http_client_request_duration_seconds_bucket")}
    assert {"0.005", "30.0", "+Inf"} <= buckets


def test_metrics_servers_past_the_bound_share_one_label_value() -> None:
    registry = CollectorRegistry()
    durations = RequestDurations(max_servers=2)
    registry.register(durations)
    for host in ("a.example", "b.example", "c.example", "d.example", "a.example"):
        durations(event(host))
    hosts = {
        s.labels["server_address"]: s.value
        for m in registry.collect()
        for s in m.samples
        if s.name.endswith("_count")
    }
    assert hosts == {"a.example": 2, "b.example": 1, OTHER: 2}


async def test_metrics_pool_figures_are_read_live_at_scrape_time(
    metrics: BotMetrics, local_server: ServerFactory
) -> None:
    http_client.configure(HTTPSettings(keepalive_expiry=60))

    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    base = await local_server({"/": ok})
    assert samples(metrics, "http_client_open_connections") == []
    await http_client.get(f"{base}/", cache=False)
    conns = {s.labels["state"]: s.value for s in samples(metrics, "http_client_open_connections")}
    assert conns == {"active": 0, "idle": 1}
    assert [s.value for s in samples(metrics, "http_client_active_requests")] == [0]
    assert [s.value for s in samples(metrics, "courier_http_pool_max_connections")] == [100]
    [limit] = samples(metrics, "courier_http_origin_concurrency_limit")
    assert limit.labels["server_address"] == "127.0.0.1" and limit.value == 50  # half the pool
    assert [s.value for s in samples(metrics, "courier_http_shed_requests_total")] == [0]


async def test_metrics_courier_counters_and_bot_gauges(metrics: BotMetrics) -> None:
    metrics.commands.declare(["pypi", "http stats"])
    metrics.commands.count("pypi", "success")
    commands = {
        (s.labels["command"], s.labels["outcome"]): s.value
        for s in samples(metrics, "discord_app_commands_total")
    }
    assert commands[("pypi", "success")] == 1
    assert commands[("http stats", "refused")] == 0
    assert len(commands) == 6
    assert [s.value for s in samples(metrics, "discord_gateway_latency_seconds")] == [0.042]
    assert [s.value for s in samples(metrics, "discord_guilds")] == [2]
    cache = {s.labels["result"] for s in samples(metrics, "courier_http_cache_requests_total")}
    assert cache == {"hit", "miss", "revalidated"}
    for name in (
        "courier_http_retries_total",
        "courier_http_rate_limited_total",
        "courier_http_queued_requests",
    ):
        assert [s.value for s in samples(metrics, name)] == [0], name


async def test_metrics_circuit_state_and_learned_blocks(metrics: BotMetrics) -> None:
    breakers = http_client.resilience.breakers
    breakers.record("https://api.example:443", "failure", False)
    limiter = http_client.resilience.limiter
    limiter.block(Scope("https://slow.example:443", "search"), 60)
    limiter.block(Scope("https://slow.example:443"), 30)
    states = {
        (s.labels["server_address"], s.labels["state"]): s.value
        for s in samples(metrics, "courier_http_circuit_state")
    }
    assert states == {
        ("api.example", "closed"): 1,
        ("api.example", "open"): 0,
        ("api.example", "half_open"): 0,
    }
    blocked = samples(metrics, "courier_http_blocked_until_seconds")
    assert [s.labels["server_address"] for s in blocked] == ["slow.example"]
    assert 55 < blocked[0].value - time.time() <= 60


def test_metrics_gateway_latency_before_any_heartbeat_is_nan() -> None:
    m = BotMetrics(FakeBot(latency=math.inf), http_client)
    assert math.isnan(samples(m, "discord_gateway_latency_seconds")[0].value)


def test_metrics_install_and_uninstall_leave_no_observer() -> None:
    m = BotMetrics(FakeBot(), http_client)
    m.install()
    assert m.durations in OBSERVERS
    m.uninstall()
    assert OBSERVERS == []


@pytest.mark.parametrize(
    ("origin", "expected"),
    [
        ("https://api.github.com:443", ("api.github.com", "443")),
        ("http://127.0.0.1:8080", ("127.0.0.1", "8080")),
        ("http://[::1]:80", ("::1", "80")),
    ],
)
def test_metrics_split_origin(origin: str, expected: tuple[str, str]) -> None:
    assert split_origin(origin) == expected
