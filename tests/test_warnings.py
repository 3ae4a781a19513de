"""The suite turns warnings into errors; the one filter for a dependency is narrow."""

from __future__ import annotations

import warnings

import discord
import pytest

DISCORD_PY_MESSAGE = "'count' is passed as positional argument"


def test_escape_markdown_passes_on_every_supported_python() -> None:
    # On 3.13 discord.py's escape_markdown warns (re.sub's positional count); pyproject filters just that.
    assert discord.utils.escape_markdown("*a*_b_") == "\\*a\\*\\_b\\_"


@pytest.mark.parametrize(
    ("message", "module"),
    [(DISCORD_PY_MESSAGE, "cogs._embeds"), (DISCORD_PY_MESSAGE, "discord.http"), ("other", "discord.utils")],
)
def test_the_filter_matches_only_that_message_from_that_module(message: str, module: str) -> None:
    with pytest.raises(DeprecationWarning):
        warnings.warn_explicit(
            message, DeprecationWarning, f"{module.replace('.', '/')}.py", 1, module=module
        )
