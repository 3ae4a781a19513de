"""deploy/: the scrape config and every Grafana panel, proven against a real Prometheus scraping the bot."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web

from bot.__main__ import start_metrics_server
from services.config import HTTPSettings
from services.http_client import http_client
from tests.bot.conftest import courier_session
from tests.conftest import Handler

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
PROMETHEUS = shutil.which("prometheus")
# Grafana's own variables, given fixed values as Grafana would substitute them.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "1h"}
STARTUP_TIMEOUT = 30.0
SCRAPES = 3

pytestmark = pytest.mark.skipif(
    PROMETHEUS is None and os.environ.get("CI") != "true",
    reason="prometheus is not installed (.ci/run installs Debian's package; CI=true makes this run)",
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def panel_queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(panel title, PromQL) for every target of every panel, rows included."""
    for panel in dashboard["panels"]:
        for inner in [panel, *panel.get("panels", [])]:
            for target in inner.get("targets", []):
                expr = target["expr"]
                for variable, value in GRAFANA_VARIABLES.items():
                    expr = expr.replace(variable, value)
                yield inner["title"], expr


def scrape_config(target: str) -> str:
    """deploy/prometheus.yml with its target pointed at the bot under test and a 1 s interval."""
    text = (DEPLOY / "prometheus.yml").read_text()
    assert text.count('"127.0.0.1:9464"') == 1 and text.count("scrape_interval: 15s") == 1
    return text.replace('"127.0.0.1:9464"', f'"{target}"').replace(
        "scrape_interval: 15s", "scrape_interval: 1s"
    )


@contextlib.asynccontextmanager
async def prometheus(config: str, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """Prometheus on a free 127.0.0.1 port with its own storage; an API client for it."""
    assert PROMETHEUS is not None, "CI=true: prometheus must be installed (see .ci/run)"
    (tmp_path / "prometheus.yml").write_text(config)
    port = free_port()
    with (tmp_path / "prometheus.log").open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            PROMETHEUS,
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=log,
        )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as api:
            async with asyncio.timeout(STARTUP_TIMEOUT):
                while True:
                    with contextlib.suppress(httpx.TransportError):
                        if (await api.get("/-/ready")).status_code == 200:
                            break
                    assert process.returncode is None, (tmp_path / "prometheus.log").read_text()
                    await asyncio.sleep(0.2)
            yield api
    finally:
        if process.returncode is None:
            process.terminate()
        async with asyncio.timeout(STARTUP_TIMEOUT):
            await process.wait()


@contextlib.asynccontextmanager
async def upstream(routes: dict[str, Handler]) -> AsyncIterator[tuple[str, web.Server]]:
    """An aiohttp server on 127.0.0.1; its low-level server shows which connections are still open."""
    app = web.Application()
    for path, handler in routes.items():
        app.router.add_get(path, handler)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        assert runner.server is not None
        yield f"http://127.0.0.1:{runner.addresses[0][1]}", runner.server
    finally:
        await runner.cleanup()


async def connections_closed(*servers: web.Server) -> None:
    """Wait (bounded) until the servers saw the client's kept-alive connections close."""
    async with asyncio.timeout(STARTUP_TIMEOUT):
        while any(server.connections for server in servers):
            await asyncio.sleep(0.01)


async def query(api: httpx.AsyncClient, expr: str) -> dict[str, Any]:
    response = await api.get("/api/v1/query", params={"query": expr})
    body: dict[str, Any] = response.json()
    return body


async def test_deploy_every_dashboard_panel_returns_series(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def package(request: web.Request) -> web.Response:
        if request.match_info["name"] == "broken":
            return web.Response(status=503)
        return web.json_response({"info": {"name": "requests", "version": "2.32.3"}, "urls": []})

    async def quota(request: web.Request) -> web.Response:
        return web.Response(status=429, headers={"Retry-After": "3600"})

    http_client.configure(
        HTTPSettings(keepalive_expiry=300, retries=1, retry_backoff=0.01, breaker_threshold=5)
    )
    async with (
        upstream({"/pypi/{name}/json": package}) as (pypi, pypi_server),
        upstream({"/{name}": quota}) as (npm, npm_server),
    ):
        monkeypatch.setenv("PYPI_URL", pypi)
        monkeypatch.setenv("NPM_REGISTRY_URL", npm)
        async with courier_session(tmp_path / "state", metrics_port=free_port()) as (fake, bot):
            server = await start_metrics_server(bot, bot.settings)
            assert server is not None
            try:
                # An answer, then a 503 retried once (its origin keeps a failing circuit), then a 429
                # from another origin on the same host teaching a block: every panel has data.
                for name in ("requests", "broken"):
                    sent = await fake.send_interaction("pypi", options={"package": name})
                    await fake.wait_for_reply(sent)
                await fake.wait_for_reply(await fake.send_interaction("npm", options={"package": "left-pad"}))
                async with prometheus(scrape_config(f"127.0.0.1:{server.port}"), tmp_path) as api:
                    await scraped(api, SCRAPES)
                    dashboard = json.loads((DEPLOY / "grafana-dashboard.json").read_text())
                    results = {(t, expr): await query(api, expr) for t, expr in panel_queries(dashboard)}
            finally:
                await server.close()
                await http_client.close()
                await connections_closed(pypi_server, npm_server)
    assert len(results) >= 11
    refused = {key: body for key, body in results.items() if body.get("status") != "success"}
    assert refused == {}, "queries that Prometheus refused"
    empty = [key for key, body in results.items() if not body["data"]["result"]]
    assert empty == [], "panels whose query returns no series"


async def scraped(api: httpx.AsyncClient, times: int) -> None:
    """Wait (bounded) until Prometheus has scraped the bot `times` times."""
    async with asyncio.timeout(STARTUP_TIMEOUT):
        while True:
            seen = (await query(api, "count_over_time(discord_guilds[1m])"))["data"]["result"]
            if seen and float(seen[0]["value"][1]) >= times:
                return
            await asyncio.sleep(0.5)


def test_deploy_dashboard_is_importable_json() -> None:
    dashboard = json.loads((DEPLOY / "grafana-dashboard.json").read_text())
    assert dashboard["uid"] and dashboard["title"] == "Courier"
    assert "id" not in dashboard  # Grafana assigns its own on import
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    sources = {json.dumps(p["datasource"]) for p in dashboard["panels"]}
    assert sources == {json.dumps({"type": "prometheus", "uid": "${datasource}"})}
    assert any(v["name"] == "datasource" for v in dashboard["templating"]["list"])


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool comes with prometheus")
def test_deploy_scrape_config_is_valid() -> None:
    promtool = shutil.which("promtool")
    assert promtool is not None
    result = subprocess.run(
        [promtool, "check", "config", str(DEPLOY / "prometheus.yml")], capture_output=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
