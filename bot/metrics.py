"""Prometheus metrics: OpenTelemetry's HTTP client names, Courier's own figures, and the bot's."""

from __future__ import annotations

import bisect
import itertools
import math
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any, Protocol

import prometheus_client
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from services.http_client import HTTPClient
from services.observers import RequestEvent, add_observer, remove_observer

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
# Suited to API calls: a fast cached answer to a slow upstream at its deadline.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 30.0)
# OpenTelemetry's known methods; anything else is `_OTHER` (semantic conventions, http.request.method).
KNOWN_METHODS = frozenset({"CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE"})
OTHER = "_OTHER"
# /isup takes a URL from the user: past this many distinct servers, new ones share one label value.
MAX_SERVERS = 100
COMMAND_OUTCOMES = ("success", "failure", "refused")
CIRCUIT_STATES = ("closed", "open", "half_open")
_CIRCUIT_RANK = {state: rank for rank, state in enumerate(CIRCUIT_STATES)}
_DEFAULT_PORTS = {"http": "80", "https": "443"}
REQUEST_LABELS = (
    "http_request_method",
    "server_address",
    "server_port",
    "http_response_status_code",
    "error_type",
)


class DiscordState(Protocol):
    """What the metrics read from the bot: gateway latency and guilds."""

    @property
    def latency(self) -> float:
        """Seconds between the last heartbeat and its acknowledgement (NaN or inf before any)."""
        ...

    @property
    def guilds(self) -> Any:
        """The guilds the bot is in."""
        ...


def split_origin(origin: str) -> tuple[str, str]:
    """`https://api.github.com:443` -> (`api.github.com`, `443`)."""
    scheme, _, rest = origin.partition("://")
    host, _, port = rest.rpartition(":")
    if not host:  # no port in the text
        return rest, _DEFAULT_PORTS.get(scheme, "")
    return host.strip("[]"), port


class _Series:
    """One label set's histogram: bucket counts (not cumulative), sum and count."""

    __slots__ = ("buckets", "count", "labels", "total")

    def __init__(self, labels: tuple[str, ...]) -> None:
        self.labels = labels
        self.buckets = [0] * (len(DURATION_BUCKETS) + 1)
        self.total = 0.0
        self.count = 0


class RequestDurations:
    """The request histogram, fed by the HTTP service's observer seam and exposed at scrape time.

    prometheus_client's own Histogram takes a lock per bucket and per sum on every observation; the
    observer runs on the event loop's thread, so a plain count per bucket does, at a third of the cost.
    """

    def __init__(self, max_servers: int = MAX_SERVERS) -> None:
        self._max_servers = max_servers
        self._servers: set[tuple[str, int]] = set()
        self._series: dict[tuple[str, str, int, int | None, str | None], _Series] = {}

    def __call__(self, event: RequestEvent) -> None:
        """Record one request sent."""
        key = (event.method, event.host, event.port, event.status, event.error_type)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = _Series(self._labels(event))
        series.buckets[bisect.bisect_left(DURATION_BUCKETS, event.duration)] += 1
        series.total += event.duration
        series.count += 1

    def _labels(self, event: RequestEvent) -> tuple[str, ...]:
        server = (event.host, event.port)
        if server not in self._servers and len(self._servers) >= self._max_servers:
            host, port = OTHER, ""
        else:
            self._servers.add(server)
            host, port = event.host, str(event.port)
        return (
            event.method if event.method in KNOWN_METHODS else OTHER,
            host,
            port,
            "" if event.status is None else str(event.status),
            event.error_type or "",
        )

    def describe(self) -> list[Metric]:
        """Nothing to declare up front."""
        return []

    def collect(self) -> Iterator[Metric]:
        """The histogram family, label sets past the server bound merged into `_OTHER`."""
        merged: dict[tuple[str, ...], _Series] = {}
        for series in list(self._series.values()):
            into = merged.get(series.labels)
            if into is None:
                into = merged[series.labels] = _Series(series.labels)
            into.buckets = [a + b for a, b in zip(into.buckets, series.buckets, strict=True)]
            into.total += series.total
            into.count += series.count
        family = HistogramMetricFamily(
            "http_client_request_duration_seconds",
            "Duration of HTTP client requests (each retry and redirect hop is a request).",
            labels=REQUEST_LABELS,
        )
        for labels, series in sorted(merged.items()):
            cumulative = list(itertools.accumulate(series.buckets))
            bounds = [*(repr(float(b)) for b in DURATION_BUCKETS), "+Inf"]
            family.add_metric(labels, list(zip(bounds, cumulative, strict=True)), series.total)
        yield family


class CommandCounter:
    """Application commands run, by registered command name and outcome."""

    def __init__(self) -> None:
        self.counts: Counter[tuple[str, str]] = Counter()

    def declare(self, names: Iterable[str]) -> None:
        """Start every registered command at zero, so a dashboard shows it before its first use."""
        for name in names:
            for outcome in COMMAND_OUTCOMES:
                self.counts[name, outcome] += 0

    def count(self, name: str, outcome: str) -> None:
        """Count one run of `name` (a registered command's qualified name, never user input)."""
        self.counts[name, outcome] += 1

    def collect(self) -> Iterator[Metric]:
        """The counter family."""
        family = CounterMetricFamily(
            "discord_app_commands", "Application commands run, by outcome.", labels=("command", "outcome")
        )
        for (name, outcome), value in sorted(self.counts.items()):
            family.add_metric((name, outcome), value)
        yield family


class HTTPClientCollector:
    """Reads the shared client's live pool and counters at scrape time (nothing is kept in between)."""

    def __init__(self, client: HTTPClient) -> None:
        self.client = client

    def describe(self) -> list[Metric]:
        """Nothing to declare up front: every family is built at scrape time."""
        return []

    def collect(self) -> Iterator[Metric]:
        """Every HTTP family, from one snapshot."""
        stats = self.client.get_pool_stats()
        server = ("server_address", "server_port")
        open_conns = GaugeMetricFamily(
            "http_client_open_connections",
            "Connections in the pool, by state.",
            labels=(*server, "state"),
        )
        active = GaugeMetricFamily(
            "http_client_active_requests", "Requests in flight or waiting for a connection.", labels=server
        )
        limits = GaugeMetricFamily(
            "courier_http_origin_concurrency_limit",
            "Requests an origin may have in flight now (its bulkhead, lowered while it is slow).",
            labels=server,
        )
        shed = CounterMetricFamily(
            "courier_http_shed_requests",
            "Requests refused at once because their origin was at its limit with a full queue.",
            labels=server,
        )
        for origin in stats.origins:
            host, port = split_origin(origin.origin)
            open_conns.add_metric((host, port, "active"), origin.active + origin.connecting)
            open_conns.add_metric((host, port, "idle"), origin.idle)
            active.add_metric((host, port), origin.active + origin.connecting + origin.queued)
            if origin.limit is not None:
                limits.add_metric((host, port), origin.limit)
            shed.add_metric((host, port), origin.shed)
        yield open_conns
        yield active
        yield limits
        yield shed
        yield GaugeMetricFamily(
            "courier_http_pool_max_connections", "The pool's connection limit.", value=stats.max_connections
        )
        yield GaugeMetricFamily(
            "courier_http_queued_requests", "Requests waiting for a connection.", value=stats.queued
        )
        yield CounterMetricFamily(
            "courier_http_retries", "Attempts sent again after a failure.", value=stats.retries
        )
        yield CounterMetricFamily(
            "courier_http_rate_limited",
            "Requests that waited for a host's rate limit.",
            value=stats.rate_limited,
        )
        cache = CounterMetricFamily(
            "courier_http_cache_requests", "Cache lookups by result.", labels=("result",)
        )
        cache.add_metric(("hit",), stats.cache.hits)
        cache.add_metric(("miss",), stats.cache.misses)
        cache.add_metric(("revalidated",), stats.cache.revalidated)
        yield cache
        yield self._circuits(stats.breakers)
        blocked = GaugeMetricFamily(
            "courier_http_blocked_until_seconds",
            "Unix time until which a host asked us to send nothing (learned from its headers).",
            labels=("server_address",),
        )
        now = time.time()
        until: dict[str, float] = {}
        for block in stats.blocks:  # per origin, partition and credential: the longest per host
            host, _ = split_origin(block.origin)
            until[host] = max(until.get(host, 0.0), now + block.seconds_left)
        for host, at in sorted(until.items()):
            blocked.add_metric((host,), at)
        yield blocked

    @staticmethod
    def _circuits(breakers: dict[str, str]) -> GaugeMetricFamily:
        """1 for each host's current breaker state (the worst of its origins), 0 for the others."""
        worst: dict[str, str] = {}
        for origin, state in breakers.items():
            host, _ = split_origin(origin)
            if _CIRCUIT_RANK.get(state, 0) >= _CIRCUIT_RANK.get(worst.get(host, "closed"), 0):
                worst[host] = state
        family = GaugeMetricFamily(
            "courier_http_circuit_state",
            "Circuit breaker state per host (1 for the current state).",
            labels=("server_address", "state"),
        )
        for host, current in sorted(worst.items()):
            for state in CIRCUIT_STATES:
                family.add_metric((host, state), 1 if state == current else 0)
        return family


class DiscordCollector:
    """Gateway latency and guild count, read from the bot at scrape time."""

    def __init__(self, bot: DiscordState) -> None:
        self.bot = bot

    def describe(self) -> list[Metric]:
        """Nothing to declare up front."""
        return []

    def collect(self) -> Iterator[Metric]:
        """The Discord families."""
        latency = self.bot.latency
        yield GaugeMetricFamily(
            "discord_gateway_latency_seconds",
            "Time between the last gateway heartbeat and its acknowledgement.",
            value=latency if math.isfinite(latency) else math.nan,
        )
        yield GaugeMetricFamily("discord_guilds", "Guilds the bot is in.", value=len(self.bot.guilds))


class BotMetrics:
    """One process's registry: the request histogram, live collectors and the command counter."""

    def __init__(self, bot: DiscordState, client: HTTPClient) -> None:
        self.registry = CollectorRegistry()
        self.durations = RequestDurations()
        self.registry.register(self.durations)
        self.commands = CommandCounter()
        self.registry.register(HTTPClientCollector(client))
        self.registry.register(DiscordCollector(bot))
        self.registry.register(self.commands)
        prometheus_client.ProcessCollector(registry=self.registry)

    def install(self) -> None:
        """Start observing requests."""
        add_observer(self.durations)

    def uninstall(self) -> None:
        """Stop observing requests."""
        remove_observer(self.durations)

    def render(self) -> bytes:
        """The exposition text of every metric."""
        return prometheus_client.generate_latest(self.registry)
