"""/pypi: a package's latest release from the PyPI JSON API."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

import discord
from discord import app_commands
from discord.ext import commands

from cogs._choices import CHOICE_VALUE_LIMIT, autocomplete
from cogs._embeds import make_embed, markdown_link, web_url
from cogs._replies import answer, as_dict, inline_code, on_cooldown, reject, text
from cogs._validation import InputError, clean, env_url, join_url, page_url
from services.errors import BadResponseError
from services.http_client import http_client

DEFAULT_PYPI_URL = "https://pypi.org"
PYPI_WEB_URL = "https://pypi.org"
MAX_LINKS = 8
# PEP 508 project names.
NAME_PATTERN = re.compile(r"[A-Z0-9]|[A-Z0-9][A-Z0-9._-]*[A-Z0-9]", re.IGNORECASE)
RECENT_LIMIT = 100


@dataclass(frozen=True, slots=True)
class Package:
    """The parts of a PyPI release the embed shows."""

    name: str
    version: str
    summary: str | None
    requires_python: str | None
    url: str | None
    released: str | None
    links: tuple[tuple[str, str], ...]


async def fetch_package(base_url: str, name: str) -> Package:
    """Fetch the latest release of `name` from PyPI's JSON API."""
    data = as_dict(await http_client.get_json(join_url(base_url, "pypi", name, "json")), "PyPI")
    info = data.get("info")
    if not isinstance(info, dict) or not text(info, "name") or not text(info, "version"):
        raise BadResponseError("PyPI answer has no info.name/version")
    version = str(info["version"])
    released = None
    files = data.get("urls")
    if isinstance(files, list) and files and isinstance(files[0], dict):
        released = text(files[0], "upload_time_iso_8601") or text(files[0], "upload_time")
    project_urls = info.get("project_urls")
    links = tuple(
        (str(k), v)
        for k, v in (project_urls.items() if isinstance(project_urls, dict) else [])
        if isinstance(v, str) and web_url(v)
    )
    return Package(
        name=str(info["name"]),
        version=version,
        summary=text(info, "summary"),
        requires_python=text(info, "requires_python"),
        url=web_url(text(info, "package_url")) or page_url(PYPI_WEB_URL, "project", str(info["name"])),
        released=released,
        links=links,
    )


def build_package_embed(package: Package) -> discord.Embed:
    """Shape a Package into an embed."""
    fields = [("Version", package.version)]
    if package.requires_python:
        fields.append(("Requires Python", package.requires_python))
    if package.released:
        fields.append(("Released", package.released[:10]))
    links = [link for k, v in package.links[:MAX_LINKS] if (link := markdown_link(k, v))]
    if links:
        fields.append(("Links", "\n".join(links)))
    return make_embed(
        title=f"{package.name} {package.version}",
        description=package.summary or "",
        url=package.url,
        fields=fields,
        footer="PyPI",
    )


class PyPI(commands.Cog):
    """Python package lookups."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.recent: dict[str, None] = {}

    @app_commands.command()
    @app_commands.describe(package="The package name on PyPI")
    @app_commands.checks.cooldown(3, 30.0, key=lambda i: i.user.id)
    async def pypi(self, interaction: discord.Interaction, package: str) -> None:
        """Show a Python package's latest release on PyPI."""
        try:
            name = clean(package, what="PyPI package name", max_length=100, pattern=NAME_PATTERN, path=True)
        except InputError as exc:
            await reject(interaction, str(exc))
            return

        def remember(found: Package) -> discord.Embed:
            self.remember(found.name)
            return build_package_embed(found)

        await answer(
            interaction,
            service="PyPI",
            not_found=f"No PyPI package named {inline_code(name)}.",
            fetch=lambda: fetch_package(self.base_url, name),
            build=remember,
        )

    def remember(self, name: str) -> None:
        """Keep `name` for autocomplete when it is a name Discord and PyPI both accept."""
        if len(name) > CHOICE_VALUE_LIMIT or not NAME_PATTERN.fullmatch(name):
            return  # an upstream's odd name must not break every later suggestion
        self.recent.pop(name, None)
        self.recent[name] = None
        while len(self.recent) > RECENT_LIMIT:
            self.recent.pop(next(iter(self.recent)))

    @pypi.autocomplete("package")
    @autocomplete
    async def pypi_autocomplete(
        self, interaction: discord.Interaction, current: str
    ) -> list[tuple[str, str]]:
        """Suggest recently looked-up packages; never calls the network."""
        needle = current.strip().lower()
        return [(n, n) for n in reversed(self.recent) if needle in n.lower()]

    async def cog_app_command_error(
        self, interaction: discord.Interaction, error: app_commands.AppCommandError
    ) -> None:
        """Answer cooldowns privately."""
        await on_cooldown(interaction, error)


def settings(env: Mapping[str, str] | None = None) -> str:
    """PYPI_URL, validated."""
    return env_url(os.environ if env is None else env, "PYPI_URL", DEFAULT_PYPI_URL)


async def setup(bot: commands.Bot) -> None:
    """Load the PyPI cog."""
    await bot.add_cog(PyPI(settings()))
