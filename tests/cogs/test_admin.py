"""/http stats: live figures for owners and admins, a polite refusal for everyone else."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field, replace
from typing import Any

import discord
import pytest
from aiohttp import web
from discord.ext import commands

from cogs.admin import REFUSAL, TRENDS_TITLE, Admin, build_stats_embed
from services.http_client import http_client
from services.stats import (
    TREND_SLOTS,
    BlockStats,
    CacheStats,
    ClusterStats,
    OriginStats,
    OriginTrend,
    ProcessStats,
)
from tests.cogs.conftest import FakeInteraction
from tests.conftest import ServerFactory


@dataclass
class AdminInteraction(FakeInteraction):
    permissions: discord.Permissions = field(default_factory=discord.Permissions.none)
    client: Any = None


def owners(*ids: int) -> commands.Bot:
    """A bot whose owners are `ids` (administrators never reach the owner lookup)."""
    return commands.Bot(command_prefix="!", intents=discord.Intents.none(), owner_ids=set(ids) or None)


async def run_stats(interaction: AdminInteraction) -> None:
    await Admin.stats.callback(Admin(), interaction)  # type: ignore[arg-type]


def fields(embed: discord.Embed | None) -> dict[str, str]:
    assert embed is not None
    return {f.name or "": f.value or "" for f in embed.fields}


async def test_stranger_gets_a_polite_private_refusal() -> None:
    interaction = AdminInteraction(client=owners(1))
    await run_stats(interaction)
    assert interaction.reply.content == REFUSAL and interaction.reply.ephemeral
    assert interaction.reply.embed is None


async def test_owner_of_a_sharded_bot_sees_the_figures() -> None:
    sharded = commands.AutoShardedBot(command_prefix="!", intents=discord.Intents.none(), owner_ids={42})
    interaction = AdminInteraction(client=sharded)
    await run_stats(interaction)
    assert interaction.reply.ephemeral and interaction.reply.content != REFUSAL
    assert "Connections" in fields(interaction.reply.embed)


@pytest.mark.parametrize(
    ("owner_ids", "permissions"),
    [({42}, discord.Permissions.none()), (set(), discord.Permissions(administrator=True))],
    ids=["owner", "administrator"],
)
async def test_owner_or_admin_sees_the_live_figures_privately(
    local_server: ServerFactory, owner_ids: set[int], permissions: discord.Permissions
) -> None:
    release = asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        await release.wait()
        return web.json_response({"ok": True})

    base = await local_server({"/slow": slow})
    pending = [asyncio.create_task(http_client.get(f"{base}/slow")) for _ in range(3)]
    for _ in range(200):  # bounded: wait until the three requests are on the wire
        if http_client.get_pool_stats().active == 3:
            break
        await asyncio.sleep(0.01)
    interaction = AdminInteraction(client=owners(*owner_ids), permissions=permissions)
    await run_stats(interaction)
    release.set()
    await asyncio.gather(*pending)

    assert interaction.reply.ephemeral
    shown = fields(interaction.reply.embed)
    assert "**3** open · 3 active · 0 idle" in shown["Connections"]
    assert "limits: 100 max · 20 keep-alive" in shown["Connections"]
    assert "**3** sent · 3 in flight" in shown["Requests"]
    assert f"`{base}` 3 (3 active, 0 idle) h1 · 3/50 in flight" in shown["Origins"]


async def test_embed_before_any_request_says_so() -> None:
    shown = fields(build_stats_embed(http_client.get_pool_stats()))
    assert "No client open yet" in shown["Connections"]
    assert shown["Latency"] == "no samples yet" and shown["Errors"] == "none"


async def test_embed_counts_outcomes_and_latency(local_server: ServerFactory) -> None:
    async def ok(request: web.Request) -> web.Response:
        return web.json_response({})

    async def missing(request: web.Request) -> web.Response:
        return web.Response(status=404)

    base = await local_server({"/ok": ok, "/missing": missing})
    for _ in range(4):
        await http_client.get(f"{base}/ok")
    await http_client.get(f"{base}/missing", raise_for_status=False)
    embed = build_stats_embed(http_client.get_pool_stats())
    shown = fields(embed)
    assert "**5** sent · 0 in flight" in shown["Requests"] and "2xx 4 · 4xx 1" in shown["Requests"]
    assert "p50" in shown["Latency"] and "last 5 requests" in shown["Latency"]
    assert len(embed) <= 6000


async def test_embed_names_open_circuits_and_cache_figures() -> None:
    stats = replace(
        http_client.get_pool_stats(),
        retries=7,
        rate_limited=2,
        breakers={"https://api.github.com:443": "open", "https://pypi.org:443": "closed"},
        cache=CacheStats(hits=5, misses=3, revalidated=1, entries=4, bytes=4096),
    )
    shown = fields(build_stats_embed(stats))
    assert shown["Resilience"] == "7 retries · 2 rate-limited\n`https://api.github.com:443` circuit open"
    assert shown["Cache"] == "5 hits · 3 misses · 1 revalidated\n4 entries · 4 KiB"


async def test_embed_lists_rate_limit_blocks_with_scope_and_time_left() -> None:
    blocks = (
        BlockStats("https://api.github.com:443", "resource=search", "1a2b3c4d", 1500.0),
        BlockStats("http://127.0.0.1:8001", "", "", 42.0),
    )
    shown = fields(build_stats_embed(replace(http_client.get_pool_stats(), blocks=blocks)))
    assert shown["Rate-limit blocks"] == (
        "`https://api.github.com:443` resource=search, credential 1a2b3c4d: blocked 25 minutes more\n"
        "`http://127.0.0.1:8001` all paths: blocked 42 seconds more"
    )
    assert fields(build_stats_embed(http_client.get_pool_stats()))["Rate-limit blocks"] == "none"


async def test_embed_trends_show_the_last_hour_per_origin(local_server: ServerFactory) -> None:
    async def ok(request: web.Request) -> web.Response:
        return web.json_response({})

    async def broken(request: web.Request) -> web.Response:
        return web.Response(status=500)

    base = await local_server({"/ok": ok, "/broken": broken})
    for _ in range(3):
        await http_client.get(f"{base}/ok", cache=False)
    await http_client.get(f"{base}/broken", raise_for_status=False, retries=0)
    shown = fields(build_stats_embed(http_client.get_pool_stats()))
    origin, p95, errors = shown[TRENDS_TITLE].split("\n")
    assert origin == f"`{base}` 4 requests"
    assert p95.startswith("p95 " + "·" * (TREND_SLOTS - 1)) and "max" in p95
    assert errors == "err " + "·" * (TREND_SLOTS - 1) + "█ 1"


async def test_embed_stays_within_discord_limits_at_its_largest() -> None:
    host = "h" * 250
    trend = OriginTrend(
        f"https://{host}:443", 10**9, tuple([float(10**5)] * TREND_SLOTS), tuple([10**6] * TREND_SLOTS)
    )
    stats = replace(
        http_client.get_pool_stats(),
        origins=tuple(OriginStats(f"https://{i}{host}:443", connections=100) for i in range(30)),
        errors={f"Error{i}" * 10: 10**9 for i in range(30)},
        breakers={f"https://{i}{host}:443": "open" for i in range(30)},
        trends=(trend,) * 5,
    )
    embed = build_stats_embed(stats)
    assert len(embed) <= 6000
    assert all(len(f.value or "") <= 1024 for f in embed.fields)
    assert TRENDS_TITLE in fields(embed)


async def test_embed_shows_each_origin_in_flight_against_its_limit_and_shed() -> None:
    github = OriginStats("https://api.github.com:443", connections=5, active=5, queued=7, in_flight=5)
    stats = replace(
        http_client.get_pool_stats(),
        client_open=True,
        origins=(
            replace(github, limit=5, shed=1234),
            OriginStats("https://pypi.org:443", connections=1, idle=1, limit=50),
            OriginStats("https://h2.example:443", connections=1, active=1, http2=1),  # httpcore: no limit
            OriginStats("https://ours.example:443", connections=1, active=1, http2=1, streams=12, limit=50),
        ),
    )
    lines = fields(build_stats_embed(stats))["Origins"].splitlines()
    assert lines == [
        "`https://api.github.com:443` 5 (5 active, 0 idle, 7 queued) h1 · 5/5 in flight, 1,234 shed",
        "`https://h2.example:443` 1 (1 active, 0 idle) h2",
        "`https://ours.example:443` 1 (1 active, 0 idle) h2 (12 streams) · 0/50 in flight",
        "`https://pypi.org:443` 1 (0 active, 1 idle) h1 · 0/50 in flight",
    ]


async def test_embed_shows_the_cluster_and_degraded_sharing() -> None:
    cluster = ClusterStats(
        sharing="degraded",
        backend="redis://127.0.0.1:6379/0",
        instance="bot-a",
        processes=(ProcessStats("bot-a", requests_total=10, in_flight=1), ProcessStats("bot-b", 30)),
        requests_total=40,
        in_flight=1,
        detail="redis connection failed (ConnectionError); running on in-process state",
    )
    shown = fields(build_stats_embed(replace(http_client.get_pool_stats(), cluster=cluster)))
    text = shown["Cluster"]
    assert "**degraded**" in text and "running on in-process state" in text
    assert "2 processes: 40 sent · 1 in flight" in text
    assert "`bot-a` (this one) 10 sent · 1 in flight" in text and "`bot-b` 30 sent" in text
    assert "Cluster" not in fields(build_stats_embed(http_client.get_pool_stats()))
