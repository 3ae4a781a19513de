"""The fake Discord itself, proven with a plain commands.Bot carrying one trivial slash command."""

from __future__ import annotations

from typing import Any

import discord
import pytest
from discord.ext import commands

from tests.bot.conftest import connected
from tests.bot.fake_discord import EPHEMERAL, INVALID_SHARD, TOKEN, FakeDiscord, guild_on_shard, shard_for


class QuickShards(commands.AutoShardedBot):
    """Identifies every shard at once: discord.py waits 5 s between shards for Discord's IDENTIFY limit."""

    async def before_identify_hook(self, shard_id: int | None, *, initial: bool = False) -> None:
        pass


def make_bot(cls: type[commands.Bot | commands.AutoShardedBot] = commands.Bot, **options: Any) -> Any:
    bot = cls(
        command_prefix=commands.when_mentioned,
        intents=discord.Intents(guilds=True),
        help_command=None,
        **options,
    )

    @bot.tree.command()
    async def ping(interaction: discord.Interaction, word: str = "pong") -> None:
        """Answer with a word."""
        await interaction.response.send_message(word, ephemeral=True)

    @bot.tree.command()
    async def slow(interaction: discord.Interaction) -> None:
        """Defer, then follow up."""
        await interaction.response.defer(thinking=True)
        await interaction.followup.send("done", embed=discord.Embed(title="t").add_field(name="a", value="b"))

    return bot


async def test_fake_discord_login_identify_ready(fake_discord: FakeDiscord) -> None:
    bot = make_bot()
    async with connected(bot, TOKEN):
        assert bot.is_ready()
        assert bot.user is not None and bot.user.id == fake_discord.application_id
        assert bot.application_id == fake_discord.application_id
        assert 2 in fake_discord.gateway_opcodes  # IDENTIFY
        await fake_discord.wait_until(lambda: 1 in fake_discord.gateway_opcodes)  # first HEARTBEAT
        assert (await bot.application_info()).owner.id == fake_discord.app_owner_id
    me = await fake_discord.wait_for_request(lambda r: r.path == "/users/@me")
    assert me.authorized


async def test_fake_discord_sync_returns_commands_with_ids(fake_discord: FakeDiscord) -> None:
    bot = make_bot()
    async with connected(bot, TOKEN):
        synced = await bot.tree.sync()
        guild_synced = await bot.tree.sync(guild=discord.Object(fake_discord.guild_id))
    assert sorted(c.name for c in synced) == ["ping", "slow"]
    assert all(c.id for c in synced)
    assert guild_synced == []
    assert {"global", f"guild:{fake_discord.guild_id}"} <= set(fake_discord.commands)


async def test_fake_discord_interaction_reaches_the_tree_and_the_callback_is_recorded(
    fake_discord: FakeDiscord,
) -> None:
    bot = make_bot()
    async with connected(bot, TOKEN):
        sent = await fake_discord.send_interaction("ping", options={"word": "hello"})
        reply = await fake_discord.wait_for_reply(sent)
    assert reply.kind == "response"
    assert reply.content == "hello"
    assert reply.flags == EPHEMERAL
    callback = fake_discord.requests_for(sent)[0]
    assert callback.path == f"/interactions/{sent.id}/{sent.token}/callback"
    assert callback.body["type"] == 4


async def test_fake_discord_defer_then_followup(fake_discord: FakeDiscord) -> None:
    bot = make_bot()
    async with connected(bot, TOKEN):
        sent = await fake_discord.send_interaction("slow")
        reply = await fake_discord.wait_for_reply(sent)
    kinds = [
        (r.method, r.body.get("type") if isinstance(r.body, dict) else None)
        for r in fake_discord.requests_for(sent)
    ]
    assert kinds == [("POST", 5), ("POST", None)]
    assert reply.kind == "followup"
    assert reply.content == "done"
    assert reply.fields == {"a": "b"}
    assert not reply.ephemeral


async def test_fake_discord_clean_close_ends_the_gateway_session(fake_discord: FakeDiscord) -> None:
    bot = make_bot()
    async with connected(bot, TOKEN) as session:
        pass
    assert session.done() and session.exception() is None
    assert bot.is_closed()
    await fake_discord.wait_until(lambda: bool(fake_discord.gateway_closes))
    # discord.py sends 1000, but with aiohttp 3.14 its reader loop's own close (4000) can win the race.
    assert len(fake_discord.gateway_closes) == 1
    assert fake_discord.open_sessions == 0


async def test_fake_discord_rejected_token_raises_login_failure(fake_discord: FakeDiscord) -> None:
    bot = make_bot()
    with pytest.raises(discord.LoginFailure):
        await bot.login("MTIz.YmFk.dG9rZW4")
    await bot.close()
    assert fake_discord.requests[-1].path == "/users/@me"
    assert not fake_discord.requests[-1].authorized
    assert not fake_discord.identified.is_set()


async def test_fake_discord_gateway_refuses_a_token_rest_did_not_check(fake_discord: FakeDiscord) -> None:
    bot = make_bot()
    await bot.login(TOKEN)
    fake_discord.token = "other.token.value"  # revoked between REST login and IDENTIFY
    with pytest.raises(discord.ConnectionClosed) as caught:
        await bot.connect(reconnect=False)
    assert caught.value.code == 4004
    assert bot.is_closed()


async def test_fake_discord_dropped_gateway_resumes_and_keeps_answering(fake_discord: FakeDiscord) -> None:
    bot = make_bot()
    async with connected(bot, TOKEN):
        await fake_discord.drop_sessions(code=4000)
        await fake_discord.wait_until(lambda: 6 in fake_discord.gateway_opcodes)  # RESUME
        await fake_discord.wait_until(lambda: fake_discord.open_sessions == 1)
        sent = await fake_discord.send_interaction("ping")
        reply = await fake_discord.wait_for_reply(sent)
    assert reply.content == "pong"
    assert fake_discord.gateway_opcodes.count(2) == 1  # resumed, not identified again


def test_guild_on_shard_follows_discords_formula() -> None:
    assert shard_for(0, 2) == 0 and shard_for(1 << 22, 2) == 1 and shard_for(3 << 22, 4) == 3
    for shard_id in range(4):
        assert shard_for(guild_on_shard(shard_id, 4), 4) == shard_id


async def test_fake_discord_shard_count_from_gateway_bot_and_one_identify_per_shard() -> None:
    async with FakeDiscord(shard_count=2) as fake:
        with fake.patched():
            bot = make_bot(QuickShards)
            async with connected(bot, TOKEN):
                assert bot.shard_count == 2 and sorted(bot.shards) == [0, 1]
                assert fake.open_sessions == 2
                on_0 = await fake.send_interaction(
                    "ping", guild_id=guild_on_shard(0, 2), options={"word": "a"}
                )
                on_1 = await fake.send_interaction(
                    "ping", guild_id=guild_on_shard(1, 2), options={"word": "b"}
                )
                assert (await fake.wait_for_reply(on_0)).content == "a"
                assert (await fake.wait_for_reply(on_1)).content == "b"
    assert any(r.path == "/gateway/bot" for r in fake.requests)
    assert sorted(fake.identifies) == [(0, 2), (1, 2)]
    assert (on_0.shard, on_1.shard) == (0, 1)
    # Each interaction went to one session only: a copy on both shards would be answered twice.
    assert len(fake.replies(on_0)) == len(fake.replies(on_1)) == 1


async def test_fake_discord_routes_only_to_the_shards_a_client_runs() -> None:
    async with FakeDiscord(shard_count=2) as fake:
        with fake.patched():
            bot = make_bot(QuickShards, shard_count=2, shard_ids=[1])
            async with connected(bot, TOKEN):
                mine = await fake.send_interaction("ping", guild_id=guild_on_shard(1, 2))
                assert (await fake.wait_for_reply(mine)).content == "pong"
                with pytest.raises(RuntimeError, match="no identified gateway session"):
                    await fake.send_interaction("ping", guild_id=guild_on_shard(0, 2))
    assert fake.identifies == [(1, 2)]


async def test_fake_discord_refuses_a_shard_outside_the_count(fake_discord: FakeDiscord) -> None:
    bot = make_bot(QuickShards, shard_count=2, shard_ids=[2])
    await bot.login(TOKEN)
    with pytest.raises(discord.ConnectionClosed) as caught:
        await bot.connect(reconnect=False)
    assert caught.value.code == INVALID_SHARD
    assert fake_discord.identifies == []


async def test_fake_discord_resumed_shards_keep_their_guilds() -> None:
    async with FakeDiscord(shard_count=2) as fake:
        with fake.patched():
            bot = make_bot(QuickShards)
            async with connected(bot, TOKEN):
                await fake.drop_sessions(code=4000)
                await fake.wait_until(lambda: fake.gateway_opcodes.count(6) == 2)  # RESUME, per shard
                await fake.wait_until(lambda: fake.open_sessions == 2)
                sent = await fake.send_interaction("ping", guild_id=guild_on_shard(1, 2))
                reply = await fake.wait_for_reply(sent)
    assert reply.content == "pong" and sent.shard == 1
    assert len(fake.identifies) == 2  # resumed, not identified again
