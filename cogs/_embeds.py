"""Embed building that always stays inside Discord's limits and sends only web links."""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

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
URL_LIMIT = 2048
LINK_LABEL_LIMIT = 64
ELLIPSIS = "…"
WEB_SCHEMES = frozenset({"http", "https"})
_HOST_NAME = re.compile(r"[\w.-]+")
# Characters that would end a Markdown link target early, or make Discord refuse it.
_LINK_ESCAPES = str.maketrans({"(": "%28", ")": "%29", "<": "%3C", ">": "%3E"})


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


def web_url(value: str | None) -> str | None:
    """`value` when it is a well-formed absolute http(s) URL, else None (Discord refuses the rest)."""
    if not value or len(value) > URL_LIMIT or any(ch.isspace() or not ch.isprintable() for ch in value):
        return None
    try:
        parts = urlsplit(value)
        host, _ = parts.hostname, parts.port  # .port raises ValueError for a malformed one
    except ValueError:
        return None
    if parts.scheme.lower() not in WEB_SCHEMES or not host or "\\" in value:
        return None
    if ":" in host:  # only an IPv6 literal in brackets has one
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return None
    elif not _HOST_NAME.fullmatch(host):
        return None
    return value


def markdown_link(label: str, url: str | None) -> str | None:
    """`[label](url)` for a field value, or None when `url` isn't a web link."""
    safe = web_url(url)
    if safe is None:
        return None
    text = cap(discord.utils.escape_markdown(" ".join(label.split())).replace("]", "\\]"), LINK_LABEL_LIMIT)
    return f"[{text or safe}]({safe.translate(_LINK_ESCAPES)})"


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
    author: str | None = None,
    author_url: str | None = None,
    author_icon: str | None = None,
    colour: int = 0x5865F2,
) -> discord.Embed:
    """Build an embed, truncating each part, dropping non-web URLs and fields past the 6000 total."""
    embed = discord.Embed(
        title=truncate(title, TITLE_LIMIT) or "Untitled",
        description=truncate(description, DESCRIPTION_LIMIT) or None,
        url=web_url(url),
        colour=colour,
    )
    if footer:
        embed.set_footer(text=truncate(footer, FOOTER_LIMIT))
    if thumbnail := web_url(thumbnail):
        embed.set_thumbnail(url=thumbnail)
    if image := web_url(image):
        embed.set_image(url=image)
    if author := cap(author or "", AUTHOR_LIMIT):
        embed.set_author(name=author, url=web_url(author_url), icon_url=web_url(author_icon))
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
