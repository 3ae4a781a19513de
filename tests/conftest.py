"""Fixtures shared by every test: a fresh shared client and local servers on 127.0.0.1."""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from pathlib import Path

import pytest
from aiohttp import web

from bot.event_loop import LoopFactory, loop_factory, read_event_loop
from services.config import HTTPSettings, SettingsError
from services.http_client import http_client
from tests.redis_server import RedisServer, need_redis_server

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
ServerFactory = Callable[[dict[str, Handler]], Awaitable[str]]


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> Mapping[str, LoopFactory]:
    """Every async test runs on the bot's loop: EVENT_LOOP (uvloop by default; asyncio for the other)."""
    try:
        name = read_event_loop(os.environ)
    except SettingsError as exc:
        raise pytest.UsageError(str(exc)) from None
    return {name: loop_factory(name)}


@pytest.fixture(autouse=True)
def restored_environment() -> Iterator[None]:
    """Undo what a test's code wrote to os.environ (load_dotenv sets keys monkeypatch never saw)."""
    saved = dict(os.environ)
    yield
    if os.environ != saved:
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture
def refused_port() -> Iterator[int]:
    """A 127.0.0.1 port that refuses connections and that no other process can take meanwhile.

    The socket is bound but never listens: the kernel answers a connect with a reset, and the port
    stays ours for the test (a port found free and released could be taken by another process).
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


@pytest.fixture(autouse=True)
async def fresh_http_client() -> AsyncIterator[None]:
    """Each test starts with default settings and no open client, and leaves none behind."""
    http_client.configure(HTTPSettings())
    yield
    await http_client.close()


@pytest.fixture
async def local_server() -> AsyncIterator[ServerFactory]:
    """Start aiohttp servers on 127.0.0.1 from {path: handler} maps; returns each base URL."""
    runners: list[web.AppRunner] = []

    async def start(routes: dict[str, Handler]) -> str:
        app = web.Application()
        for path, handler in routes.items():
            app.router.add_route("*", path, handler)
        runner = web.AppRunner(app, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        port = runner.addresses[0][1]
        return f"http://127.0.0.1:{port}"

    yield start
    for runner in runners:
        await runner.cleanup()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A started redis-server, stopped after the test."""
    need_redis_server()
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def idle_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server set up but not started (nothing listens on its port yet)."""
    need_redis_server()
    server = RedisServer(tmp_path, password="s3cret-pw")
    yield server
    server.stop()
