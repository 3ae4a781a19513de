"""Every cog extension loads into a real bot's command tree, and refuses bad base URLs."""

from __future__ import annotations

import discord
import pytest
from discord import app_commands
from discord.ext import commands

from cogs._replies import on_cooldown
from services.config import SettingsError
from tests.cogs.conftest import FakeInteraction

EXTENSIONS = {
    "cogs.github": "github",
    "cogs.pypi": "pypi",
    "cogs.crates": "crate",
    "cogs.npm": "npm",
    "cogs.wiki": "wiki",
    "cogs.xkcd": "xkcd",
    "cogs.weather": "weather",
    "cogs.dictionary": "define",
    "cogs.isup": "isup",
}


def make_bot() -> commands.Bot:
    return commands.Bot(command_prefix="!", intents=discord.Intents.none())


async def test_setup_registers_every_command(monkeypatch: pytest.MonkeyPatch) -> None:
    bot = make_bot()
    for extension in EXTENSIONS:
        await bot.load_extension(extension)
    names = {c.name for c in bot.tree.get_commands()}
    assert names == set(EXTENSIONS.values())
    group = bot.tree.get_command("github")
    assert isinstance(group, app_commands.Group)
    assert {c.name for c in group.commands} == {"repo", "user"}


@pytest.mark.parametrize(
    ("extension", "key"),
    [
        ("cogs.github", "GITHUB_API_URL"),
        ("cogs.pypi", "PYPI_URL"),
        ("cogs.crates", "CRATES_API_URL"),
        ("cogs.npm", "NPM_REGISTRY_URL"),
        ("cogs.wiki", "WIKIPEDIA_API_URL"),
        ("cogs.xkcd", "XKCD_URL"),
        ("cogs.weather", "OPEN_METEO_FORECAST_URL"),
        ("cogs.dictionary", "DICTIONARY_API_URL"),
    ],
)
async def test_setup_rejects_bad_base_url(monkeypatch: pytest.MonkeyPatch, extension: str, key: str) -> None:
    monkeypatch.setenv(key, "file:///etc/passwd")
    bot = make_bot()
    with pytest.raises(commands.ExtensionFailed) as info:
        await bot.load_extension(extension)
    assert isinstance(info.value.original, SettingsError) and key in str(info.value.original)


async def test_cooldown_answered_privately(interaction: FakeInteraction) -> None:
    cooldown = app_commands.Cooldown(1, 60)
    handled = await on_cooldown(interaction, app_commands.CommandOnCooldown(cooldown, 90))  # type: ignore[arg-type]
    assert handled and interaction.reply.ephemeral and "2 minutes" in (interaction.reply.content or "")
