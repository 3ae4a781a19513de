"""The Bot subclass: cog discovery and loading, change-only sync, the global error handler, close order."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import discord
import httpx
import pytest
from discord import app_commands
from discord.ext import commands
from loguru import logger

from bot.bot import UNEXPECTED, Courier, CourierTree, discover_extensions, user_message
from bot.config import BotSettings
from services.errors import NotFoundError
from services.http_client import http_client
from tests.bot.conftest import courier_session
from tests.cogs.conftest import FakeInteraction, Sent

TOKEN = "MTIz.NDU2.Nzg5"


def make_bot(tmp_path: Path, **changes: Any) -> Courier:
    settings = BotSettings(token=TOKEN, state_dir=tmp_path, shutdown_grace=1.0, **changes)
    return Courier(settings)


def test_discover_extensions_skips_helper_modules() -> None:
    found = discover_extensions()
    assert {"cogs.admin", "cogs.github", "cogs.pypi", "cogs.weather"} <= set(found)
    assert not [name for name in found if name.split(".")[-1].startswith("_")]


def test_intents_ask_for_nothing_privileged(tmp_path: Path) -> None:
    intents = make_bot(tmp_path).intents
    assert intents.guilds
    assert not (intents.members or intents.presences or intents.message_content or intents.messages)


async def test_misconfigured_cog_is_skipped_and_the_rest_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GITHUB_API_URL", "ftp://mirror.example")
    bot = make_bot(tmp_path)
    await bot.load_cogs()
    assert "cogs.github" in bot.failed_extensions and "GITHUB_API_URL" in bot.failed_extensions["cogs.github"]
    assert "cogs.github" not in bot.extensions
    assert {"cogs.admin", "cogs.pypi"} <= set(bot.extensions)
    assert bot.tree.get_command("github") is None and bot.tree.get_command("pypi") is not None


@dataclass
class SyncRecorder:
    calls: list[discord.abc.Snowflake | None] = field(default_factory=list)
    error: Exception | None = None

    async def __call__(self, *, guild: discord.abc.Snowflake | None = None) -> list[Any]:
        self.calls.append(guild)
        if self.error is not None:
            raise self.error
        return ["cmd"]


def recorder(bot: Courier, monkeypatch: pytest.MonkeyPatch) -> SyncRecorder:
    rec = SyncRecorder()
    monkeypatch.setattr(bot.tree, "sync", rec)
    return rec


async def test_sync_runs_once_until_the_commands_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = make_bot(tmp_path)
    await first.load_cogs()
    rec = recorder(first, monkeypatch)
    await first.sync_commands()
    assert rec.calls == [None]

    again = make_bot(tmp_path)
    await again.load_cogs()
    rec = recorder(again, monkeypatch)
    await again.sync_commands()
    assert rec.calls == []

    changed = make_bot(tmp_path)
    await changed.load_cogs()

    @changed.tree.command(name="extra")
    async def extra(interaction: discord.Interaction) -> None:
        """A new command."""

    rec = recorder(changed, monkeypatch)
    await changed.sync_commands()
    assert rec.calls == [None]


async def test_sync_to_dev_guild_copies_global_commands(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bot = make_bot(tmp_path, guild_id=1234)
    await bot.load_cogs()
    rec = recorder(bot, monkeypatch)
    await bot.sync_commands()
    assert [g.id for g in rec.calls if g is not None] == [1234]
    assert bot.tree.get_command("pypi", guild=discord.Object(1234)) is not None


@pytest.mark.parametrize(("mode", "synced"), [("auto", False), ("always", True)])
async def test_auto_sync_is_skipped_when_a_cog_failed_to_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog_loguru: list[str], mode: Any, synced: bool
) -> None:
    monkeypatch.setenv("GITHUB_API_URL", "ftp://typo.example")
    bot = make_bot(tmp_path, command_sync=mode)
    await bot.load_cogs()
    rec = recorder(bot, monkeypatch)
    await bot.sync_commands()
    assert bool(rec.calls) is synced
    skipped = [line for line in caplog_loguru if line.startswith("not syncing")]
    if synced:
        assert not skipped
    else:
        assert len(skipped) == 1 and "cogs.github" in skipped[0] and "COMMAND_SYNC=always" in skipped[0]


@pytest.mark.parametrize(("mode", "expected"), [("always", 2), ("never", 0)])
async def test_sync_mode_overrides_the_change_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: Any, expected: int
) -> None:
    calls = 0
    for _ in range(2):
        bot = make_bot(tmp_path, command_sync=mode)
        rec = recorder(bot, monkeypatch)
        await bot.sync_commands()
        calls += len(rec.calls)
    assert calls == expected


async def test_refused_sync_is_logged_not_fatal_and_retried_next_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bot = make_bot(tmp_path)
    rec = recorder(bot, monkeypatch)
    rec.error = discord.Forbidden(FakeHTTPResponse(403), "Missing Access")
    await bot.sync_commands()
    rec.error = None
    await bot.sync_commands()
    assert len(rec.calls) == 2


@dataclass
class FakeHTTPResponse:
    status: int
    reason: str = "Forbidden"


@dataclass
class FakeCommand:
    qualified_name: str = "pypi"
    name: str = "pypi"


@dataclass
class TreeInteraction(FakeInteraction):
    """A fake interaction with what the tree's error handler reads."""

    command: FakeCommand = field(default_factory=FakeCommand)
    type: discord.InteractionType = discord.InteractionType.application_command

    def __post_init__(self) -> None:
        super().__post_init__()
        self.response.type = None  # type: ignore[attr-defined]


def invoke_error(original: Exception) -> app_commands.CommandInvokeError:
    return app_commands.CommandInvokeError(FakeCommand(), original)  # type: ignore[arg-type]


async def tree_error(
    tmp_path: Path, interaction: TreeInteraction, error: app_commands.AppCommandError
) -> None:
    await make_bot(tmp_path).tree.on_error(interaction, error)  # type: ignore[arg-type]


async def test_error_handler_replies_privately_with_the_typed_message(tmp_path: Path) -> None:
    interaction = TreeInteraction()
    request = httpx.Request("GET", "https://pypi.org/pypi/nope/json")
    error = NotFoundError("GET -> 404", request=request, response=httpx.Response(404, request=request))
    await tree_error(tmp_path, interaction, invoke_error(error))
    assert interaction.sent == [Sent("response", error.user_message, None, True)]


async def test_error_handler_after_public_defer_deletes_thinking_then_follows_up(tmp_path: Path) -> None:
    interaction = TreeInteraction()
    await interaction.response.defer(thinking=True)
    interaction.response.type = discord.InteractionResponseType.deferred_channel_message  # type: ignore[attr-defined]
    await tree_error(tmp_path, interaction, invoke_error(RuntimeError("boom")))
    assert [s.kind for s in interaction.sent] == ["defer", "delete", "followup"]
    assert interaction.reply == Sent("followup", UNEXPECTED, None, True)


async def test_error_handler_logs_the_detail_but_not_to_the_user(
    tmp_path: Path, caplog_loguru: list[str]
) -> None:
    interaction = TreeInteraction()
    await tree_error(tmp_path, interaction, invoke_error(KeyError("internal-detail")))
    assert "internal-detail" not in (interaction.reply.content or "")
    assert any("internal-detail" in line and "KeyError" in line for line in caplog_loguru)


async def test_error_handler_stays_silent_when_the_command_answered(tmp_path: Path) -> None:
    interaction = TreeInteraction()
    interaction.extras["error_handled"] = True
    await tree_error(tmp_path, interaction, invoke_error(RuntimeError("boom")))
    assert interaction.sent == []


async def test_error_handler_does_not_answer_a_cooldown_twice(tmp_path: Path) -> None:
    interaction = TreeInteraction()
    await interaction.response.send_message("Slow down", ephemeral=True)
    cooldown = app_commands.CommandOnCooldown(app_commands.Cooldown(1, 30), 12.0)
    await tree_error(tmp_path, interaction, cooldown)
    assert len(interaction.sent) == 1


@pytest.mark.parametrize(
    ("error", "words"),
    [
        (app_commands.CommandOnCooldown(app_commands.Cooldown(1, 30), 12.0), "Slow down"),
        (app_commands.MissingPermissions(["administrator"]), "can't use"),
        (app_commands.BotMissingPermissions(["embed_links"]), "permissions"),
        (app_commands.NoPrivateMessage(), "server"),
    ],
)
def test_user_message_is_short_and_specific(error: app_commands.AppCommandError, words: str) -> None:
    message = user_message(error)
    assert words in message and len(message) < 120


async def test_drain_refuses_new_commands_and_waits_for_running_ones(tmp_path: Path) -> None:
    bot = make_bot(tmp_path)
    tree: CourierTree = bot.tree
    finished = asyncio.Event()

    async def command() -> None:
        assert await tree.interaction_check(TreeInteraction())  # type: ignore[arg-type]
        await asyncio.sleep(0.05)
        finished.set()

    task = asyncio.create_task(command())
    await asyncio.sleep(0)
    assert task in tree.running
    await tree.drain(grace=5)
    assert finished.is_set() and not tree.running
    late = TreeInteraction()
    assert not await tree.interaction_check(late)  # type: ignore[arg-type]
    assert late.reply.ephemeral and "restarting" in (late.reply.content or "")


async def test_close_closes_discord_before_the_http_client(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    order: list[str] = []

    async def discord_close(self: commands.AutoShardedBot) -> None:
        order.append("discord")

    async def http_close() -> None:
        order.append("http")

    monkeypatch.setattr(commands.AutoShardedBot, "close", discord_close)
    monkeypatch.setattr(http_client, "close", http_close)
    health = tmp_path / "health"
    health.write_text("1")
    bot = make_bot(tmp_path, health_file=health)
    await bot.close()
    assert order == ["discord", "http"]
    assert not health.exists()


@pytest.fixture
def caplog_loguru() -> Iterator[list[str]]:
    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(str(m)), level="DEBUG", format="{message}\n{exception}")
    yield lines
    logger.remove(sink)


async def test_error_handler_counts_failures_and_refusals_by_command(tmp_path: Path) -> None:
    bot = make_bot(tmp_path, metrics_port=9464)
    assert bot.metrics is not None
    await bot.tree.on_error(TreeInteraction(), invoke_error(RuntimeError("boom")))  # type: ignore[arg-type]
    refusal = app_commands.CheckFailure("no")
    await bot.tree.on_error(TreeInteraction(), refusal)  # type: ignore[arg-type]
    assert bot.metrics.commands.counts == {("pypi", "failure"): 1, ("pypi", "refused"): 1}


async def test_health_waits_for_ready_then_says_shutting_down_once_close_begins(tmp_path: Path) -> None:
    assert make_bot(tmp_path).health() == (False, "waiting for the first READY from Discord")
    async with courier_session(tmp_path) as (_, bot):
        assert bot.health() == (True, "connected to Discord in 1 guild(s)")
        assert bot.metrics is None  # no METRICS_PORT: nothing is kept
    assert bot.health() == (False, "shutting down")
