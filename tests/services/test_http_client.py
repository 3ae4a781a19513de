"""The shared client's lifecycle, verbs, errors and logging."""

from __future__ import annotations

import asyncio
import threading

import httpx
import pytest
import respx
from aiohttp import web
from loguru import logger

from services.config import HTTPSettings
from services.errors import (
    BadResponseError,
    ClientError,
    ConnectionFailedError,
    NotFoundError,
    ServerError,
    TimedOutError,
    UpstreamRateLimitedError,
)
from services.http_client import HTTPClient, http_client

API = "https://api.example.test"


async def test_get_client_concurrent_first_use_creates_one_client(monkeypatch):
    built = []
    original = HTTPClient._build_client

    def counting_build(self):
        client = original(self)
        built.append(client)
        return client

    monkeypatch.setattr(HTTPClient, "_build_client", counting_build)
    clients = await asyncio.gather(*(http_client.get_client() for _ in range(50)))
    assert len(built) == 1
    assert all(c is built[0] for c in clients)


async def test_close_is_safe_before_use_and_twice():
    await http_client.close()
    client = await http_client.get_client()
    await http_client.close()
    await http_client.close()
    assert client.is_closed


async def test_close_leaves_no_task_of_its_own_running():
    await http_client.get_client()
    await http_client.close()
    assert not [t.get_name() for t in asyncio.all_tasks() if t is not asyncio.current_task()]


async def test_next_use_after_close_builds_fresh_client():
    first = await http_client.get_client()
    await http_client.close()
    second = await http_client.get_client()
    assert second is not first
    assert not second.is_closed


def test_second_event_loop_gets_fresh_client_and_first_is_closed():
    service = HTTPClient(HTTPSettings())
    first = asyncio.run(service.get_client())
    # asyncio.run tore its loop down; the client bound to it must have been closed with it.
    assert first.is_closed
    second = asyncio.run(service.get_client())
    assert second is not first
    assert second.is_closed


def test_threads_with_their_own_loops_do_not_break_each_other():
    service = HTTPClient(HTTPSettings())
    hits = 0

    async def handler(request: web.Request) -> web.Response:
        nonlocal hits
        hits += 1
        await asyncio.sleep(0.01)
        return web.json_response({"ok": True})

    server_ready = threading.Event()
    stop = threading.Event()
    base: list[str] = []

    async def serve() -> None:
        app = web.Application()
        app.router.add_get("/", handler)
        runner = web.AppRunner(app, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        base.append(f"http://127.0.0.1:{runner.addresses[0][1]}/")
        server_ready.set()
        while not stop.is_set():
            await asyncio.sleep(0.01)
        await runner.cleanup()

    server = threading.Thread(target=asyncio.run, args=(serve(),))
    server.start()
    assert server_ready.wait(10)
    errors: list[BaseException] = []

    async def worker() -> None:
        for _ in range(20):
            assert (await service.get_json(base[0])) == {"ok": True}

    def run_worker() -> None:
        try:
            asyncio.run(worker())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run_worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    stop.set()
    server.join(10)
    assert errors == []
    assert hits == 60
    assert service.get_pool_stats().client_open is False


@respx.mock(using="httpx")
async def test_verbs_send_their_method_and_options(respx_mock):
    for method in ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"):
        respx_mock.request(method, f"{API}/thing").respond(200, json={"method": method})
    calls = [
        http_client.get(f"{API}/thing", params={"q": "a b"}),
        http_client.post(f"{API}/thing", json={"x": 1}),
        http_client.put(f"{API}/thing", content=b"raw"),
        http_client.patch(f"{API}/thing", data={"k": "v"}),
        http_client.delete(f"{API}/thing"),
        http_client.head(f"{API}/thing"),
    ]
    responses = await asyncio.gather(*calls)
    assert [r.request.method for r in responses] == ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"]
    assert responses[0].request.url.params["q"] == "a b"
    assert responses[1].request.content == b'{"x":1}'
    assert responses[3].request.content == b"k=v"


@respx.mock(using="httpx")
async def test_request_sends_user_agent_and_extra_headers(respx_mock):
    route = respx_mock.get(f"{API}/ua").respond(200)
    await http_client.get(f"{API}/ua", headers={"X-Extra": "1"})
    sent = route.calls.last.request
    assert sent.headers["User-Agent"].startswith("Courier/")
    assert "github.com" in sent.headers["User-Agent"]
    assert sent.headers["X-Extra"] == "1"


@respx.mock(using="httpx")
async def test_user_agent_setting_overrides_default(respx_mock):
    http_client.configure(HTTPSettings(user_agent="MyBot/2.0 (+https://example.org)"))
    route = respx_mock.get(f"{API}/ua").respond(200)
    await http_client.get(f"{API}/ua")
    assert route.calls.last.request.headers["User-Agent"] == "MyBot/2.0 (+https://example.org)"


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (400, ClientError),
        (404, NotFoundError),
        (410, NotFoundError),
        (429, UpstreamRateLimitedError),
        (500, ServerError),
        (503, ServerError),
    ],
)
@respx.mock(using="httpx")
async def test_error_status_raises_typed_http_status_error(respx_mock, status, error):
    respx_mock.get(f"{API}/x").respond(status, headers={"Retry-After": "7"})
    with pytest.raises(error) as caught:
        await http_client.get(f"{API}/x", params={"ignored": "1"}, raise_for_status=True)
    assert isinstance(caught.value, httpx.HTTPStatusError)
    assert caught.value.response.status_code == status


@respx.mock(using="httpx")
async def test_raise_for_status_false_returns_error_response(respx_mock):
    respx_mock.get(f"{API}/gone").respond(404, text="nope")
    response = await http_client.get(f"{API}/gone", raise_for_status=False)
    assert response.status_code == 404
    assert response.text == "nope"


@respx.mock(using="httpx")
async def test_rate_limited_error_carries_retry_after(respx_mock):
    respx_mock.get(f"{API}/limited").respond(429, headers={"Retry-After": "720"})
    with pytest.raises(UpstreamRateLimitedError) as caught:
        await http_client.get(f"{API}/limited")
    assert caught.value.retry_after == 720
    assert "12 minutes" in caught.value.user_message


@respx.mock(using="httpx")
async def test_get_json_raises_bad_response_on_invalid_json(respx_mock):
    respx_mock.get(f"{API}/broken").respond(200, text="{not json")
    with pytest.raises(BadResponseError):
        await http_client.get_json(f"{API}/broken")


async def test_per_call_timeout_raises_timed_out(local_server):
    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(2)
        return web.Response(text="late")

    base = await local_server({"/slow": slow})
    with pytest.raises(TimedOutError) as caught:
        await http_client.get(f"{base}/slow", timeout=0.2)
    assert isinstance(caught.value, httpx.TimeoutException)
    assert http_client.get_pool_stats().errors == {"ReadTimeout": 1}


async def test_connection_refused_raises_connection_failed(refused_port):
    with pytest.raises(ConnectionFailedError) as caught:
        await http_client.get(f"http://127.0.0.1:{refused_port}/")
    assert "unavailable" in caught.value.user_message


async def test_stream_yields_body_in_chunks(local_server):
    payload = b"x" * 200_000

    async def big(request: web.Request) -> web.Response:
        return web.Response(body=payload)

    base = await local_server({"/big": big})
    received = bytearray()
    async with http_client.stream("GET", f"{base}/big") as response:
        assert response.status_code == 200
        async for chunk in response.aiter_bytes():
            received += chunk
    assert bytes(received) == payload


async def test_stream_raises_typed_error_on_error_status(local_server):
    async def missing(request: web.Request) -> web.Response:
        return web.Response(status=404)

    base = await local_server({"/missing": missing})
    with pytest.raises(NotFoundError):
        async with http_client.stream("GET", f"{base}/missing"):
            pass


async def test_isolated_client_uses_same_settings_and_own_options(local_server):
    async def echo(request: web.Request) -> web.Response:
        return web.json_response(dict(request.headers))

    base = await local_server({"/echo": echo})
    async with http_client.isolated(headers={"Authorization": "Bearer isolated"}) as client:
        seen = (await client.get(f"{base}/echo")).json()
        shared = await http_client.get_client()
        assert client is not shared
        assert client.timeout == shared.timeout
    assert client.is_closed
    assert seen["Authorization"] == "Bearer isolated"
    assert seen["User-Agent"].startswith("Courier/")


@respx.mock(using="httpx")
async def test_request_log_line_redacts_secrets(respx_mock):
    lines: list[str] = []
    sink = logger.add(lines.append, level="DEBUG", format="{message}")
    try:
        respx_mock.get(host="api.example.test").respond(500)
        with pytest.raises(ServerError) as caught:
            await http_client.get(
                "https://user:hunter2@api.example.test/search",
                params={"q": "cats", "api_key": "sk-live-123", "access_token": "tok-456"},
                headers={"Authorization": "Bearer sk-header-789"},
            )
    finally:
        logger.remove(sink)
    text = "\n".join(lines) + str(caught.value) + repr(caught.value)
    assert "GET https://api.example.test/search" in text
    assert "q=cats" in text
    for secret in ("hunter2", "sk-live-123", "tok-456", "sk-header-789"):
        assert secret not in text


async def test_request_counters_track_status_classes_and_latency(local_server):
    async def ok(request: web.Request) -> web.Response:
        return web.Response(status=int(request.query.get("status", "200")))

    base = await local_server({"/": ok})
    for status in (200, 200, 204, 404, 503):
        await http_client.get(f"{base}/", params={"status": status}, raise_for_status=False)
    stats = http_client.get_pool_stats()
    assert stats.requests_total == 5
    assert stats.in_flight == 0
    assert stats.by_status_class == {"2xx": 3, "4xx": 1, "5xx": 1}
    assert stats.latency.samples == 5
    assert stats.latency.p50_ms is not None
    assert stats.latency.p50_ms <= stats.latency.p99_ms


def test_client_of_a_loop_closed_without_teardown_is_replaced():
    service = HTTPClient(HTTPSettings())
    loop = asyncio.new_event_loop()
    stale = loop.run_until_complete(service.get_client())
    watcher = next(iter(asyncio.all_tasks(loop)))
    loop.close()  # no asyncio.run teardown: the watcher never got to close the client
    lines: list[str] = []
    sink = logger.add(lines.append, level="WARNING", format="{message}")
    try:
        fresh = asyncio.run(service.get_client())
    finally:
        logger.remove(sink)
        watcher._log_destroy_pending = False  # the pending task is this test's doing
    assert fresh is not stale
    assert any("outlived their event loop" in line for line in lines)
    assert service.get_pool_stats().client_open is False
