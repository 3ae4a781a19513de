"""The real bot process with METRICS_PORT: /metrics moves with real traffic, /healthz follows the session."""

from __future__ import annotations

import asyncio
import signal
import socket
from pathlib import Path

import httpx
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from tests.bot.fake_discord import TOKEN, FakeDiscord
from tests.bot.test_e2e_process import (
    PROCESS_TIMEOUT,
    READY_LINE,
    assert_clean,
    bot_process,
    child_env,
    closed_port,
    exit_code,
)
from tests.conftest import ServerFactory

OTHER_USER = 300000000000000009
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    """Every sample as {(name, sorted labels): value}."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def find(samples: Samples, name: str, **labels: str) -> list[float]:
    return [
        value
        for (n, have), value in samples.items()
        if n == name and all((k, v) in have for k, v in labels.items())
    ]


async def test_e2e_metrics_move_with_traffic_and_health_follows_shutdown(
    tmp_path: Path, local_server: ServerFactory
) -> None:
    arrived, release = asyncio.Event(), asyncio.Event()

    async def package(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name == "slow":
            arrived.set()
            async with asyncio.timeout(PROCESS_TIMEOUT):
                await release.wait()
        if name == "missing":
            return web.Response(status=404)
        return web.json_response({"info": {"name": name, "version": "1.0"}, "urls": []})

    upstream = await local_server({"/pypi/{name}/json": package})
    upstream_port = upstream.rsplit(":", 1)[1]
    port = closed_port()
    base = f"http://127.0.0.1:{port}"
    async with FakeDiscord() as fake, httpx.AsyncClient(base_url=base, timeout=5) as probe:
        env = child_env(
            tmp_path, fake.rest_base, str(fake.gateway_url), DISCORD_TOKEN=TOKEN,
            PYPI_URL=upstream, METRICS_PORT=str(port), HTTP_CACHE="false",
        )  # fmt: skip
        async with bot_process(env, tmp_path) as child:
            await child.wait_for_line(READY_LINE)
            healthy = await probe.get("/healthz")
            before = parse((await probe.get("/metrics")).text)
            for name in ("requests", "httpx", "missing", "fourth"):  # /pypi allows 3 per 30 s per user
                await fake.wait_for_reply(await fake.send_interaction("pypi", options={"package": name}))
            after = parse((await probe.get("/metrics")).text)

            running = await fake.send_interaction("pypi", options={"package": "slow"}, user_id=OTHER_USER)
            async with asyncio.timeout(PROCESS_TIMEOUT):
                await arrived.wait()
            child.process.send_signal(signal.SIGTERM)
            await child.wait_for_line("running command(s)")
            stopping = await probe.get("/healthz")
            release.set()
            await fake.wait_for_reply(running)
            code = await exit_code(child)

    assert code == 0, child.output
    assert_clean(child.output)
    assert healthy.status_code == 200, healthy.text
    assert healthy.json()["status"] == "ok" and "connected to Discord" in healthy.json()["reason"]
    assert stopping.status_code == 503
    assert stopping.json() == {"status": "unavailable", "reason": "shutting down"}

    server = {"server_address": "127.0.0.1", "server_port": upstream_port, "http_request_method": "GET"}
    count = "http_client_request_duration_seconds_count"
    assert find(before, count) == []
    assert find(after, count, **server, http_response_status_code="200", error_type="") == [2]
    assert find(after, count, **server, http_response_status_code="404", error_type="404") == [1]
    assert sum(find(after, "http_client_request_duration_seconds_sum", **server)) > 0
    inf = find(after, "http_client_request_duration_seconds_bucket", **server, le="+Inf")
    assert sum(inf) == 3
    assert find(after, "discord_app_commands_total", command="pypi", outcome="success") == [3]
    assert find(after, "discord_app_commands_total", command="pypi", outcome="refused") == [1]
    assert find(before, "discord_app_commands_total", command="pypi", outcome="success") == [0]
    assert find(after, "discord_guilds") == [1]
    assert find(after, "http_client_open_connections", server_address="127.0.0.1", state="idle") == [1]
    for name in (
        "courier_http_retries_total",
        "courier_http_queued_requests",
        "courier_http_rate_limited_total",
        "discord_gateway_latency_seconds",
    ):
        assert len(find(after, name)) == 1, name
    assert {dict(labels)["result"] for (n, labels) in after if n == "courier_http_cache_requests_total"} == {
        "hit",
        "miss",
        "revalidated",
    }
    assert all("/pypi/" not in str(labels) for (_, labels) in after)  # no URL ever becomes a label


async def test_e2e_metrics_port_in_use_exits_2_naming_the_setting(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        async with FakeDiscord() as fake:
            env = child_env(
                tmp_path, fake.rest_base, str(fake.gateway_url), DISCORD_TOKEN=TOKEN, METRICS_PORT=str(port)
            )
            async with bot_process(env, tmp_path) as child:
                code = await exit_code(child)
    assert code == 2, child.output
    assert f"METRICS_PORT {port} is already in use on 127.0.0.1" in child.output
    assert_clean(child.output)
    assert fake.requests == []


async def test_e2e_metrics_without_port_opens_no_listener(tmp_path: Path) -> None:
    async with FakeDiscord() as fake:
        env = child_env(tmp_path, fake.rest_base, str(fake.gateway_url), DISCORD_TOKEN=TOKEN)
        async with bot_process(env, tmp_path) as child:
            await child.wait_for_line(READY_LINE)
            listening = await asyncio.to_thread(listening_ports, child.process.pid)
            child.process.send_signal(signal.SIGTERM)
            await exit_code(child)
    assert listening == set()
    assert "metrics and health on" not in child.output


def listening_ports(pid: int) -> set[int]:
    """TCP ports the process listens on, from /proc (its socket inodes against the LISTEN table)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = fd.readlink().as_posix()
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports
