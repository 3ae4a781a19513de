"""The request observer seam: one event per request sent, each retry and each redirect hop."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import replace

import httpx
import pytest
from aiohttp import web

from services import observers
from services.config import HTTPSettings
from services.http_client import http_client
from services.observers import RequestEvent, add_observer, remove_observer
from tests.conftest import ServerFactory
from tests.services.conftest import FAST


@pytest.fixture
def events() -> Iterator[list[RequestEvent]]:
    """Every event emitted during the test."""
    seen: list[RequestEvent] = []
    add_observer(seen.append)
    yield seen
    remove_observer(seen.append)


def _settings(**changes: object) -> HTTPSettings:
    return replace(FAST, **changes)  # type: ignore[arg-type]


async def test_observers_one_event_per_attempt_with_status_and_error_type(
    events: list[RequestEvent], local_server: ServerFactory
) -> None:
    calls = 0

    async def flaky(request: web.Request) -> web.Response:
        nonlocal calls
        calls += 1
        return web.Response(status=503 if calls == 1 else 200, text="ok")

    base = await local_server({"/flaky": flaky})
    http_client.configure(_settings(retries=2))
    response = await http_client.get(f"{base}/flaky", cache=False)
    assert response.status_code == 200
    port = httpx.URL(base).port
    assert [(e.method, e.scheme, e.host, e.port, e.status, e.error_type) for e in events] == [
        ("GET", "http", "127.0.0.1", port, 503, "503"),
        ("GET", "http", "127.0.0.1", port, 200, None),
    ]
    assert all(e.duration >= 0 for e in events)


@pytest.mark.parametrize("transport", ["fast", "httpcore"])
async def test_observers_each_redirect_hop_is_a_request(
    events: list[RequestEvent], local_server: ServerFactory, transport: str
) -> None:
    async def hop(request: web.Request) -> web.Response:
        raise web.HTTPFound("/end")

    async def end(request: web.Request) -> web.Response:
        return web.Response(text="done")

    base = await local_server({"/start": hop, "/end": end})
    http_client.configure(_settings(transport=transport))
    response = await http_client.get(f"{base}/start", cache=False)
    assert response.status_code == 200
    assert [(e.status, e.error_type) for e in events] == [(302, None), (200, None)]


async def test_observers_an_error_without_answer_is_typed_by_class(events: list[RequestEvent]) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    http_client.configure(_settings(retries=0))
    with pytest.raises(httpx.HTTPError):
        await http_client.get(f"http://127.0.0.1:{port}/", cache=False)
    assert [(e.host, e.port, e.status, e.error_type) for e in events] == [
        ("127.0.0.1", port, None, "ConnectError")
    ]


async def test_observers_a_failing_observer_does_not_fail_the_request(
    local_server: ServerFactory,
) -> None:
    def broken(event: RequestEvent) -> None:
        raise ValueError("boom")

    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    base = await local_server({"/": ok})
    add_observer(broken)
    try:
        assert (await http_client.get(f"{base}/")).status_code == 200
    finally:
        remove_observer(broken)
    assert observers.OBSERVERS == []


def test_observers_registry_adds_once_and_removes_quietly() -> None:
    def seen(event: RequestEvent) -> None:
        return None

    add_observer(seen)
    add_observer(seen)
    assert [seen] == observers.OBSERVERS
    remove_observer(seen)
    remove_observer(seen)
    assert observers.OBSERVERS == []
