"""Embed building that always stays inside Discord's limits."""

from __future__ import annotations

import discord

TITLE_LIMIT = 256
DESCRIPTION_LIMIT = 4096
FIELD_NAME_LIMIT = 256
FIELD_VALUE_LIMIT = 1024
FIELD_COUNT_LIMIT = 25
FOOTER_LIMIT = 2048
AUTHOR_LIMIT = 256
TOTAL_LIMIT = 6000
CHOICE_NAME_LIMIT = 100
ELLIPSIS = "…"


def truncate(text: str, limit: int) -> str:
    """Cut `text` to `limit` characters, ending with an ellipsis when cut (on a word when possible)."""
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    space = cut.rfind(" ")
    if space > limit // 2:
        cut = cut[:space]
    return cut.rstrip() + ELLIPSIS


def cap(text: str, limit: int) -> str:
    """An upstream string cut to the Discord limit of its place (TITLE_LIMIT, CHOICE_NAME_LIMIT, ...)."""
    return truncate(text.strip(), limit)


def _length(embed: discord.Embed) -> int:
    return len(embed)


def make_embed(
    *,
    title: str,
    description: str = "",
    url: str | None = None,
    fields: list[tuple[str, str]] | None = None,
    footer: str | None = None,
    thumbnail: str | None = None,
    image: str | None = None,
    colour: int = 0x5865F2,
) -> discord.Embed:
    """Build an embed, truncating each part and dropping fields that would pass the 6000 total."""
    embed = discord.Embed(
        title=truncate(title, TITLE_LIMIT) or "Untitled",
        description=truncate(description, DESCRIPTION_LIMIT) or None,
        url=url,
        colour=colour,
    )
    if footer:
        embed.set_footer(text=truncate(footer, FOOTER_LIMIT))
    if thumbnail:
        embed.set_thumbnail(url=thumbnail)
    if image:
        embed.set_image(url=image)
    for raw_name, raw_value in (fields or [])[:FIELD_COUNT_LIMIT]:
        name = truncate(raw_name, FIELD_NAME_LIMIT) or "\u200b"
        value = truncate(raw_value, FIELD_VALUE_LIMIT) or "\u200b"
        if _length(embed) + len(name) + len(value) > TOTAL_LIMIT:
            break
        embed.add_field(name=name, value=value, inline=True)
    if _length(embed) > TOTAL_LIMIT and embed.description:
        room = TOTAL_LIMIT - (_length(embed) - len(embed.description))
        embed.description = truncate(embed.description, max(1, room))
    return embed
