"""Tests for autocomplete answers: every handler, whatever the input, answers what Discord accepts."""

from __future__ import annotations

from typing import Any

import discord
import pytest
from discord import app_commands
from discord.ext import commands

from bot.bot import discover_extensions
from cogs._choices import autocomplete, to_choices
from cogs.xkcd import Xkcd
from tests.cogs.conftest import FakeInteraction

AWKWARD_INPUT = [
    "",
    " ",
    "\t\n",
    "²",
    "¹²³",
    "٣",
    "9" * 5000,
    "9" * 150,
    "-1",
    "0",
    "1e9",
    "\x00",
    "🙂" * 200,
]
OPTION_TYPES: dict[discord.AppCommandOptionType, type] = {
    discord.AppCommandOptionType.string: str,
    discord.AppCommandOptionType.integer: int,
    discord.AppCommandOptionType.number: float,
}


def assert_discord_accepts(choices: object, option: discord.AppCommandOptionType) -> None:
    assert isinstance(choices, list) and len(choices) <= 25
    for choice in choices:
        assert isinstance(choice, app_commands.Choice)
        assert 1 <= len(choice.name) <= 100 and choice.name.strip()
        assert isinstance(choice.value, OPTION_TYPES[option]) and not isinstance(choice.value, bool)
        if isinstance(choice.value, str):
            assert 1 <= len(choice.value) <= 100
        else:
            assert -(2**53) <= choice.value <= 2**53


async def loaded_bot() -> commands.Bot:
    bot = commands.Bot(command_prefix="!", intents=discord.Intents.none())
    for extension in discover_extensions():
        await bot.load_extension(extension)
    return bot


async def test_every_autocomplete_answers_what_discord_accepts_whatever_the_input() -> None:
    bot = await loaded_bot()
    # load_extension imports its own copy of each module: reach the cogs by name, not by class.
    xkcd: Any = bot.get_cog("Xkcd")
    pypi: Any = bot.get_cog("PyPI")
    xkcd.latest_seen = 3000
    pypi.recent.update(dict.fromkeys(["httpx", "x" * 5000, "y" * 100, *(f"pkg{i}" for i in range(40))]))
    handlers = 0
    for command in bot.tree.walk_commands():
        if not isinstance(command, app_commands.Command):
            continue
        for parameter in command.parameters:
            if not parameter.autocomplete:
                continue
            handlers += 1
            callback: Any = command._params[parameter.name].autocomplete
            for current in AWKWARD_INPUT:
                interaction = FakeInteraction()
                if getattr(callback, "pass_command_binding", False):
                    choices = await callback(command.binding, interaction, current)
                else:
                    choices = await callback(interaction, current)
                assert_discord_accepts(choices, parameter.type)
    assert handlers >= 2


@pytest.mark.parametrize("current", ["²", "9" * 5000, "9" * 150, "100001", ""])
async def test_xkcd_autocomplete_offers_only_numbers_in_range(current: str) -> None:
    cog = Xkcd("https://xkcd.test")
    choices = await cog.xkcd_autocomplete(FakeInteraction(), current)  # type: ignore[arg-type]
    assert [c.value for c in choices] == [0]


def test_to_choices_caps_names_and_drops_what_discord_refuses() -> None:
    pairs: list[tuple[str, Any]] = [
        ("n" * 500, "ok"),
        ("   ", "blank name"),
        ("empty value", ""),
        ("long value", "v" * 101),
        ("dup", "ok"),
        ("huge", 2**60),
        ("bool", True),
        ("nan", float("nan")),
        ("two\nlines", "fine"),
    ]
    choices = to_choices(pairs)
    assert [(len(c.name), c.value) for c in choices] == [(100, "ok"), (9, "fine")]
    assert choices[1].name == "two lines"
    assert len(to_choices((str(i), i) for i in range(100))) == 25


async def test_autocomplete_wrapper_turns_a_failure_into_no_suggestions() -> None:
    class Broken:
        @autocomplete
        async def suggest(self, interaction: discord.Interaction, current: str) -> list[tuple[str, int]]:
            return [("one", int(current))]

    assert await Broken().suggest(FakeInteraction(), "²") == []  # type: ignore[arg-type]
    assert await Broken().suggest(FakeInteraction(), "7") == [app_commands.Choice(name="one", value=7)]  # type: ignore[arg-type]
