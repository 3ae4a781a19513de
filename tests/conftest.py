"""Fixtures shared by every test: a fresh shared client and local servers on 127.0.0.1."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web

from services.config import HTTPSettings
from services.http_client import http_client

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
ServerFactory = Callable[[dict[str, Handler]], Awaitable[str]]


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
