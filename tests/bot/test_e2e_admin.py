"""/http stats through the real bot and command tree, logged into the fake Discord."""

from __future__ import annotations

from pathlib import Path

from cogs.admin import REFUSAL, TRENDS_TITLE
from tests.bot.conftest import courier_session
from tests.bot.fake_discord import ADMINISTRATOR, APP_OWNER_ID, EPHEMERAL

OWNER = 400000000000000001
STRANGER = 400000000000000002
STATS_FIELDS = {
    "Connections",
    "Requests",
    "Latency",
    "Errors",
    "Resilience",
    "Rate-limit blocks",
    "Cache",
    "Origins",
    TRENDS_TITLE,
}


async def test_e2e_bot_loads_every_cog_and_syncs_globally(tmp_path: Path) -> None:
    async with courier_session(tmp_path) as (fake, bot):
        assert bot.failed_extensions == {}
        synced = {c["name"] for c in fake.commands["global"]}
    assert {"http", "github", "pypi", "crate", "npm", "wiki", "xkcd", "weather", "define"} <= synced
    put = [r for r in fake.requests if r.method == "PUT"]
    assert [r.path for r in put] == [f"/applications/{fake.application_id}/commands"]
    assert all(r.authorized for r in fake.requests if not r.path.startswith(("/interactions", "/webhooks")))


async def test_e2e_bot_syncs_to_the_dev_guild_only_when_set(tmp_path: Path) -> None:
    async with courier_session(tmp_path, guild_id=123456789012345678) as (fake, _):
        assert set(fake.commands) == {"guild:123456789012345678"}


async def test_e2e_http_stats_for_a_configured_owner(tmp_path: Path) -> None:
    async with courier_session(tmp_path, owner_ids=frozenset({OWNER})) as (fake, _):
        sent = await fake.send_interaction("http", subcommand="stats", user_id=OWNER)
        reply = await fake.wait_for_reply(sent)
    assert reply.kind == "response"
    assert reply.flags & EPHEMERAL
    assert reply.embeds[0]["title"] == "Shared HTTP client"
    assert set(reply.fields) == STATS_FIELDS
    assert "limits:" in reply.fields["Connections"]


async def test_e2e_http_stats_refuses_a_stranger_politely(tmp_path: Path) -> None:
    async with courier_session(tmp_path, owner_ids=frozenset({OWNER})) as (fake, _):
        sent = await fake.send_interaction("http", subcommand="stats", user_id=STRANGER)
        reply = await fake.wait_for_reply(sent)
    assert reply.content == REFUSAL
    assert reply.ephemeral
    assert reply.embeds == []
    assert len(fake.replies(sent)) == 1  # the global error handler did not answer a second time


async def test_e2e_http_stats_for_a_server_administrator(tmp_path: Path) -> None:
    async with courier_session(tmp_path, owner_ids=frozenset({OWNER})) as (fake, _):
        sent = await fake.send_interaction(
            "http", subcommand="stats", user_id=STRANGER, permissions=ADMINISTRATOR
        )
        reply = await fake.wait_for_reply(sent)
    assert reply.ephemeral and set(reply.fields) == STATS_FIELDS


async def test_e2e_http_stats_falls_back_to_the_application_owner(tmp_path: Path) -> None:
    async with courier_session(tmp_path) as (fake, _):
        owner = await fake.send_interaction("http", subcommand="stats", user_id=APP_OWNER_ID)
        stranger = await fake.send_interaction("http", subcommand="stats", user_id=OWNER)
        owner_reply = await fake.wait_for_reply(owner)
        stranger_reply = await fake.wait_for_reply(stranger)
    assert set(owner_reply.fields) == STATS_FIELDS
    assert stranger_reply.content == REFUSAL
