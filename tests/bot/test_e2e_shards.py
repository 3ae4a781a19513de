"""Two `python -m bot` processes, one shard each of a 2-shard bot, against one fake Discord and one Redis."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from pathlib import Path

from aiohttp import web

from tests.bot.fake_discord import APP_OWNER_ID, TOKEN, FakeDiscord, Reply, guild_on_shard
from tests.bot.test_e2e_process import (
    PROCESS_TIMEOUT,
    READY_LINE,
    Child,
    assert_clean,
    bot_process,
    child_env,
    exit_code,
)
from tests.conftest import ServerFactory
from tests.redis_server import RedisServer

SHARDS = 2


async def cluster_stats(fake: FakeDiscord, shard: int, instances: list[str]) -> Reply:
    """Ask /http stats on `shard` until its Cluster field lists every one of `instances` (bounded)."""
    async with asyncio.timeout(PROCESS_TIMEOUT):
        while True:
            sent = await fake.send_interaction(
                "http", subcommand="stats", user_id=APP_OWNER_ID, guild_id=guild_on_shard(shard, SHARDS)
            )
            reply = await fake.wait_for_reply(sent)
            if all(f"`{name}`" in reply.fields.get("Cluster", "") for name in instances):
                return reply
            await asyncio.sleep(0.2)  # processes publish their figures every second


async def test_e2e_shards_two_processes_split_the_shards_share_redis_and_one_syncs(
    tmp_path: Path, local_server: ServerFactory, redis_server: RedisServer
) -> None:
    asked: list[tuple[str, str]] = []

    async def pypi(request: web.Request) -> web.Response:
        # Each process gets its own PYPI_URL prefix, so the upstream sees which process answered.
        name = request.match_info["name"]
        asked.append((request.match_info["process"], name))
        return web.json_response({"info": {"name": name, "version": "1.0"}, "urls": []})

    upstream = await local_server({"/{process}/pypi/{name}/json": pypi})
    async with FakeDiscord(shard_count=SHARDS) as fake, contextlib.AsyncExitStack() as stack:
        children: list[Child] = []
        for shard in range(SHARDS):
            home = tmp_path / f"shard-{shard}"  # own state dir: only the shard rule stops a second sync
            home.mkdir()
            env = child_env(
                home,
                fake.rest_base,
                str(fake.gateway_url),
                DISCORD_TOKEN=TOKEN,
                SHARD_COUNT=str(SHARDS),
                SHARD_IDS=str(shard),
                PYPI_URL=f"{upstream}/process-{shard}",
                REDIS_URL=redis_server.url,
                COURIER_INSTANCE=f"shard-{shard}",
            )
            children.append(await stack.enter_async_context(bot_process(env, home)))
        for shard, child in enumerate(children):
            await child.wait_for_line(READY_LINE)
            assert f"shard(s) {shard} of {SHARDS}" in child.output
        assert sorted(fake.identifies) == [(0, SHARDS), (1, SHARDS)]
        assert fake.open_sessions == SHARDS

        sent = [
            await fake.send_interaction(
                "pypi", guild_id=guild_on_shard(shard, SHARDS), options={"package": f"pkg{shard}"}
            )
            for shard in range(SHARDS)
        ]
        replies = [await fake.wait_for_reply(s) for s in sent]
        # Asked on either shard, the stats show both processes through Redis, the answering one marked.
        clusters = [
            (await cluster_stats(fake, shard, ["shard-0", "shard-1"])).fields["Cluster"]
            for shard in range(SHARDS)
        ]

        for child in children:
            child.process.send_signal(signal.SIGTERM)
        codes = [await exit_code(child) for child in children]
        await fake.wait_until(lambda: fake.open_sessions == 0)

    outputs = [child.output for child in children]
    assert codes == [0, 0], outputs
    assert [s.shard for s in sent] == [0, 1]
    assert [r.embeds[0]["title"] for r in replies] == ["pkg0 1.0", "pkg1 1.0"]
    assert sorted(asked) == [("process-0", "pkg0"), ("process-1", "pkg1")]
    for shard, cluster in enumerate(clusters):
        assert "2 processes" in cluster and f"`shard-{shard}` (this one)" in cluster
    puts = [r for r in fake.requests if r.method == "PUT" and r.path.endswith("/commands")]
    assert len(puts) == 1
    assert "synced" in outputs[0] and "not syncing" not in outputs[0]
    assert "not syncing application commands: the process running shard 0 does" in outputs[1]
    for output in outputs:
        assert "stopped cleanly" in output
        assert_clean(output)


async def test_e2e_shards_too_few_for_discord_exits_2_with_the_setting_to_change(tmp_path: Path) -> None:
    async with FakeDiscord(shard_count=2, required_shards=2) as fake:
        env = child_env(tmp_path, fake.rest_base, str(fake.gateway_url), DISCORD_TOKEN=TOKEN, SHARD_COUNT="1")
        async with bot_process(env, tmp_path) as child:
            code = await exit_code(child)
    assert code == 2, child.output
    assert "Discord requires more shards for this bot: raise SHARD_COUNT" in child.output
    assert "(gateway close 4011)" in child.output
    assert fake.identifies == []
    assert_clean(child.output)
