"""The fake Discord itself, proven with a plain commands.Bot carrying one trivial slash command."""

from __future__ import annotations

import discord
import pytest
from discord.ext import commands

from tests.bot.conftest import connected
from tests.bot.fake_discord import EPHEMERAL, TOKEN, FakeDiscord


def make_bot() -> commands.Bot:
    bot = commands.Bot(
        command_prefix=commands.when_mentioned, intents=discord.Intents(guilds=True), help_command=None
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
