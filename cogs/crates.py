"""/crate: a Rust crate from crates.io (the shared client enforces its 1 request/second)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

import discord
from discord import app_commands
from discord.ext import commands

from cogs._embeds import make_embed, web_url
from cogs._replies import answer, as_dict, inline_code, number, on_cooldown, reject, text
from cogs._validation import InputError, clean, env_url, join_url, page_url
from services.errors import BadResponseError
from services.http_client import http_client

DEFAULT_CRATES_API_URL = "https://crates.io/api/v1"
CRATES_WEB_URL = "https://crates.io/crates"
NAME_PATTERN = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")


@dataclass(frozen=True, slots=True)
class Crate:
    """A crate as the embed shows it."""

    name: str
    version: str
    description: str | None
    downloads: int
    repository: str | None
    documentation: str | None


async def fetch_crate(base_url: str, name: str) -> Crate:
    """Fetch one crate's summary."""
    data = as_dict(await http_client.get_json(join_url(base_url, "crates", name)), "crates.io")
    crate = data.get("crate")
    if not isinstance(crate, dict) or not text(crate, "name"):
        raise BadResponseError("crates.io answer has no crate.name")
    version = text(crate, "max_stable_version") or text(crate, "max_version") or text(crate, "newest_version")
    if not version:
        raise BadResponseError("crates.io answer has no version")
    return Crate(
        name=str(crate["name"]),
        version=version,
        description=text(crate, "description"),
        downloads=number(crate, "downloads") or 0,
        repository=text(crate, "repository"),
        documentation=text(crate, "documentation"),
    )


def build_crate_embed(crate: Crate) -> discord.Embed:
    """Shape a Crate into an embed."""
    fields = [("Version", crate.version), ("Downloads", f"{crate.downloads:,}")]
    for label, link in (("Repository", crate.repository), ("Docs", crate.documentation)):
        if link := web_url(link):
            fields.append((label, link))
    return make_embed(
        title=f"{crate.name} {crate.version}",
        description=(crate.description or "").strip(),
        url=page_url(CRATES_WEB_URL, crate.name),
        fields=fields,
        footer="crates.io",
    )


class Crates(commands.Cog):
    """Rust crate lookups."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url

    @app_commands.command()
    @app_commands.describe(name="The crate name, e.g. serde")
    @app_commands.checks.cooldown(2, 30.0, key=lambda i: i.user.id)
    async def crate(self, interaction: discord.Interaction, name: str) -> None:
        """Show a Rust crate from crates.io."""
        try:
            crate_name = clean(name, what="crate name", max_length=64, pattern=NAME_PATTERN, path=True)
        except InputError as exc:
            await reject(interaction, str(exc))
            return
        await answer(
            interaction,
            service="crates.io",
            not_found=f"No crate named {inline_code(crate_name)}.",
            fetch=lambda: fetch_crate(self.base_url, crate_name),
            build=build_crate_embed,
        )

    async def cog_app_command_error(
        self, interaction: discord.Interaction, error: app_commands.AppCommandError
    ) -> None:
        """Answer cooldowns privately."""
        await on_cooldown(interaction, error)


async def setup(bot: commands.Bot) -> None:
    """Load the crates.io cog."""
    await bot.add_cog(Crates(env_url(os.environ, "CRATES_API_URL", DEFAULT_CRATES_API_URL)))
