"""Autocomplete answers Discord accepts, whatever the partial input and whatever the handler does."""

from __future__ import annotations

import functools
import math
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any, TypeVar

import discord
from discord import app_commands
from loguru import logger

from cogs._embeds import CHOICE_NAME_LIMIT, cap

# Discord refuses the whole answer for one choice outside these (and shows "Loading options failed").
CHOICE_COUNT_LIMIT = 25
CHOICE_VALUE_LIMIT = 100
# Integer and number options hold what a JavaScript number holds exactly.
NUMBER_LIMIT = 2**53

CogT = TypeVar("CogT")
ValueT = TypeVar("ValueT", str, int, float)
Handler = Callable[[CogT, discord.Interaction[Any], str], Awaitable[Iterable[tuple[str, ValueT]]]]
Autocomplete = Callable[
    [CogT, discord.Interaction[Any], str], Coroutine[Any, Any, list[app_commands.Choice[ValueT]]]
]


def _acceptable(value: object) -> bool:
    if isinstance(value, str):
        return 1 <= len(value) <= CHOICE_VALUE_LIMIT
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return math.isfinite(value) and -NUMBER_LIMIT <= value <= NUMBER_LIMIT


def to_choices(options: Iterable[tuple[str, ValueT]]) -> list[app_commands.Choice[ValueT]]:
    """Choices from (name, value) pairs: names capped, bad or repeated values dropped, at most 25."""
    choices: list[app_commands.Choice[ValueT]] = []
    seen: set[ValueT] = set()
    for raw_name, value in options:
        name = cap(" ".join(str(raw_name).split()), CHOICE_NAME_LIMIT)
        if not name or not _acceptable(value) or value in seen:
            continue
        seen.add(value)
        choices.append(app_commands.Choice(name=name, value=value))
        if len(choices) == CHOICE_COUNT_LIMIT:
            break
    return choices


def autocomplete(handler: Handler[CogT, ValueT]) -> Autocomplete[CogT, ValueT]:
    """Wrap an autocomplete method that yields (name, value) pairs: it never raises, Discord accepts all."""

    @functools.wraps(handler)
    async def wrapper(
        cog: CogT, interaction: discord.Interaction[Any], current: str
    ) -> list[app_commands.Choice[ValueT]]:
        try:
            return to_choices(await handler(cog, interaction, current))
        except Exception:  # an autocomplete failure must cost the user suggestions, nothing more
            logger.opt(exception=True).warning("{} failed for {!r:.80}", handler.__qualname__, current)
            return []

    return wrapper
