"""The reply flow every lookup shares: defer, fetch, one followup; failures are ephemeral."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from typing import TypeVar

import discord
from discord import app_commands
from loguru import logger

from cogs._validation import InputError
from services.errors import (
    BadResponseError,
    ClientClosingError,
    CourierHTTPError,
    NotFoundError,
    RateLimitedError,
    TimedOutError,
    UpstreamUnavailableError,
    humanize_seconds,
)

T = TypeVar("T")
# Shown in place of a backtick inside inline code, where Discord has no escape for one.
BACKTICK_STAND_IN = "\u02cb"


def inline_code(value: str) -> str:
    """`value` as Discord inline code; a backtick in it would end the span early, so it is replaced."""
    return f"`{value.replace('`', BACKTICK_STAND_IN)}`"


class NothingFoundError(CourierHTTPError):
    """The upstream answered fine but matched nothing (a search with no results)."""


def error_message(exc: CourierHTTPError, service: str, not_found: str) -> str:
    """The sentence a user reads for an upstream failure."""
    if isinstance(exc, NotFoundError | NothingFoundError):
        return not_found
    if isinstance(exc, ClientClosingError):
        return exc.user_message
    if isinstance(exc, RateLimitedError):
        wait = "a little while" if exc.retry_after is None else humanize_seconds(exc.retry_after)
        return f"{service} is rate-limiting us; try again in {wait}."
    if isinstance(exc, TimedOutError):
        return f"{service} took too long to answer; please try again later."
    if isinstance(exc, UpstreamUnavailableError):
        return f"{service} is unavailable right now; please try again later."
    if isinstance(exc, BadResponseError):
        return f"{service} sent an answer we could not understand."
    return f"{service} could not answer that request."


async def reject(interaction: discord.Interaction, message: str) -> None:
    """Answer bad input at once, privately, without deferring."""
    await interaction.response.send_message(message, ephemeral=True)


async def fail(interaction: discord.Interaction, message: str) -> None:
    """Replace the public 'thinking' message with a private failure message."""
    # The first followup would inherit the public defer; deleting it first lets this one be ephemeral.
    with contextlib.suppress(discord.HTTPException):
        await interaction.delete_original_response()
    await interaction.followup.send(message, ephemeral=True)


async def answer(
    interaction: discord.Interaction,
    *,
    service: str,
    not_found: str,
    fetch: Callable[[], Awaitable[T]],
    build: Callable[[T], discord.Embed],
) -> None:
    """Defer publicly, run `fetch`, then send its embed or a private failure message."""
    await interaction.response.defer(thinking=True)
    try:
        result = await fetch()
    except CourierHTTPError as exc:
        logger.info("{} lookup failed: {}", service, exc)
        await fail(interaction, error_message(exc, service, not_found))
        return
    except InputError as exc:  # a URL built from the input was refused before any request
        logger.info("{} lookup refused: {}", service, exc)
        await fail(interaction, str(exc))
        return
    await interaction.followup.send(embed=build(result))


def as_dict(data: object, host: str = "the service") -> dict[str, object]:
    """`data` when it is a JSON object, else BadResponseError."""
    if not isinstance(data, dict):
        raise BadResponseError(f"expected a JSON object from {host}, got {type(data).__name__}")
    return data


def text(data: dict[str, object], key: str) -> str | None:
    """A non-empty string field, or None."""
    value = data.get(key)
    return value if isinstance(value, str) and value.strip() else None


def number(data: dict[str, object], key: str) -> int | None:
    """An integer field (not a bool), or None."""
    value = data.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


async def on_cooldown(interaction: discord.Interaction, error: Exception) -> bool:
    """Answer a cooldown privately; True when `error` was a cooldown."""
    if isinstance(error, app_commands.CommandOnCooldown):
        interaction.extras["error_handled"] = True  # the tree's global handler must not reply again
        await interaction.response.send_message(
            f"Slow down: try again in {humanize_seconds(error.retry_after)}.", ephemeral=True
        )
        return True
    return False
