"""/wiki: a Wikipedia page summary, falling back to search when the title doesn't exist."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

import discord
from discord import app_commands
from discord.ext import commands

from cogs._embeds import make_embed, web_url
from cogs._replies import answer, as_dict, inline_code, on_cooldown, reject, text
from cogs._validation import InputError, clean, env_url, join_url, page_url
from services.config import SettingsError, env_str
from services.errors import BadResponseError, NotFoundError
from services.http_client import http_client

DEFAULT_WIKIPEDIA_LANGUAGE = "en"
DEFAULT_WIKIPEDIA_API_URL = "https://{lang}.wikipedia.org"


@dataclass(frozen=True, slots=True)
class WikiSettings:
    """The Wikipedia site to ask."""

    base_url: str = "https://en.wikipedia.org"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> WikiSettings:
        """Read WIKIPEDIA_LANGUAGE and WIKIPEDIA_API_URL ({lang} is replaced by the language)."""
        env = os.environ if env is None else env
        lang = env_str(env, "WIKIPEDIA_LANGUAGE", DEFAULT_WIKIPEDIA_LANGUAGE)
        if not lang.replace("-", "").isalnum() or len(lang) > 20:
            raise SettingsError("WIKIPEDIA_LANGUAGE", lang, "a language code such as en or pt-br")
        template = env_str(env, "WIKIPEDIA_API_URL", DEFAULT_WIKIPEDIA_API_URL)
        return cls(
            base_url=env_url({"WIKIPEDIA_API_URL": template.replace("{lang}", lang)}, "WIKIPEDIA_API_URL", "")
        )


@dataclass(frozen=True, slots=True)
class Summary:
    """A page summary."""

    title: str
    extract: str
    url: str | None
    thumbnail: str | None


async def fetch_summary(settings: WikiSettings, title: str) -> Summary:
    """Fetch the REST summary of the page titled `title`."""
    url = join_url(settings.base_url, "api", "rest_v1", "page", "summary", title.replace(" ", "_"))
    data = as_dict(await http_client.get_json(url), "Wikipedia")
    found = text(data, "title")
    urls = data.get("content_urls")
    desktop = urls.get("desktop") if isinstance(urls, dict) else None
    page = text(desktop, "page") if isinstance(desktop, dict) else None
    if not found:
        raise BadResponseError("Wikipedia summary has no title")
    thumb = data.get("thumbnail")
    return Summary(
        title=found,
        extract=text(data, "extract") or "",
        url=web_url(page) or page_url(settings.base_url, "wiki", found.replace(" ", "_")),
        thumbnail=text(thumb, "source") if isinstance(thumb, dict) else None,
    )


async def search_title(settings: WikiSettings, query: str) -> str | None:
    """The best-matching page title for `query`, or None."""
    params = {"action": "query", "list": "search", "srsearch": query, "srlimit": "1", "format": "json"}
    data = as_dict(await http_client.get_json(f"{settings.base_url}/w/api.php", params=params), "Wikipedia")
    found = data.get("query")
    hits = found.get("search") if isinstance(found, dict) else None
    if not isinstance(hits, list):
        raise BadResponseError("Wikipedia search answer has no query.search")
    return text(hits[0], "title") if hits and isinstance(hits[0], dict) else None


async def fetch_summary_or_search(settings: WikiSettings, query: str) -> Summary:
    """The summary of `query`, or of the best search hit when no page has that exact title."""
    try:
        return await fetch_summary(settings, query)
    except NotFoundError:
        title = await search_title(settings, query)
        if title is None:
            raise
        return await fetch_summary(settings, title)


def build_summary_embed(summary: Summary) -> discord.Embed:
    """Shape a Summary into an embed."""
    return make_embed(
        title=summary.title,
        description=summary.extract,
        url=summary.url,
        thumbnail=summary.thumbnail,
        footer="Wikipedia",
    )


class Wiki(commands.Cog):
    """Wikipedia lookups."""

    def __init__(self, settings: WikiSettings) -> None:
        self.settings = settings

    @app_commands.command()
    @app_commands.describe(query="A page title or search words")
    @app_commands.checks.cooldown(3, 30.0, key=lambda i: i.user.id)
    async def wiki(self, interaction: discord.Interaction, query: str) -> None:
        """Summarise a Wikipedia page."""
        try:
            cleaned = clean(query, what="search", max_length=255, path=True)
        except InputError as exc:
            await reject(interaction, str(exc))
            return
        await answer(
            interaction,
            service="Wikipedia",
            not_found=f"Wikipedia has no page matching {inline_code(cleaned)}.",
            fetch=lambda: fetch_summary_or_search(self.settings, cleaned),
            build=build_summary_embed,
        )

    async def cog_app_command_error(
        self, interaction: discord.Interaction, error: app_commands.AppCommandError
    ) -> None:
        """Answer cooldowns privately."""
        await on_cooldown(interaction, error)


async def setup(bot: commands.Bot) -> None:
    """Load the Wikipedia cog."""
    await bot.add_cog(Wiki(WikiSettings.from_env()))
