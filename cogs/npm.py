"""/npm: a package's latest version from the npm registry."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

import discord
from discord import app_commands
from discord.ext import commands

from cogs._embeds import make_embed, web_url
from cogs._replies import answer, as_dict, inline_code, on_cooldown, reject, text
from cogs._validation import InputError, clean, env_url, page_url, segment
from services.errors import BadResponseError
from services.http_client import http_client

DEFAULT_NPM_REGISTRY_URL = "https://registry.npmjs.org"
NPM_WEB_URL = "https://www.npmjs.com/package"
# npm names: optional @scope/, URL-safe characters, no leading dot or underscore.
NAME_PATTERN = re.compile(r"(?:@[a-z0-9-~][a-z0-9-._~]*/)?[a-z0-9-~][a-z0-9-._~]*", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class NpmPackage:
    """The latest release of an npm package."""

    name: str
    version: str
    description: str | None
    license: str | None
    homepage: str | None


def package_url(base_url: str, name: str) -> str:
    """The registry URL of `name`; a scoped name's slash is encoded (`@scope%2Fpkg`)."""
    return f"{base_url}/{segment(name).replace('%40', '@', 1) if name.startswith('@') else segment(name)}"


async def fetch_npm_package(base_url: str, name: str) -> NpmPackage:
    """Fetch the packument of `name` and pick its `latest` dist-tag."""
    data = as_dict(await http_client.get_json(package_url(base_url, name)), "npm")
    tags = data.get("dist-tags")
    latest = text(tags, "latest") if isinstance(tags, dict) else None
    found = text(data, "name")
    if not found or not latest:
        raise BadResponseError("npm answer has no name or dist-tags.latest")
    versions = data.get("versions")
    release = versions.get(latest) if isinstance(versions, dict) else None
    release = release if isinstance(release, dict) else {}
    licence = release.get("license", data.get("license"))
    return NpmPackage(
        name=found,
        version=latest,
        description=text(release, "description") or text(data, "description"),
        license=licence if isinstance(licence, str) else None,
        homepage=text(release, "homepage") or text(data, "homepage"),
    )


def build_npm_embed(package: NpmPackage) -> discord.Embed:
    """Shape an NpmPackage into an embed."""
    fields = [("Version", package.version)]
    if package.license:
        fields.append(("License", package.license))
    if homepage := web_url(package.homepage):
        fields.append(("Homepage", homepage))
    return make_embed(
        title=f"{package.name} {package.version}",
        description=package.description or "",
        # A scoped name is two segments on the website: /package/@scope/name.
        url=page_url(NPM_WEB_URL, *package.name.split("/", 1)),
        fields=fields,
        footer="npm",
    )


class Npm(commands.Cog):
    """npm package lookups."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url

    @app_commands.command()
    @app_commands.describe(package="The package name, e.g. react or @types/node")
    @app_commands.checks.cooldown(3, 30.0, key=lambda i: i.user.id)
    async def npm(self, interaction: discord.Interaction, package: str) -> None:
        """Show an npm package's latest version."""
        try:
            name = clean(package, what="npm package name", max_length=214, pattern=NAME_PATTERN, path=True)
        except InputError as exc:
            await reject(interaction, str(exc))
            return
        await answer(
            interaction,
            service="npm",
            not_found=f"No npm package named {inline_code(name)}.",
            fetch=lambda: fetch_npm_package(self.base_url, name),
            build=build_npm_embed,
        )

    async def cog_app_command_error(
        self, interaction: discord.Interaction, error: app_commands.AppCommandError
    ) -> None:
        """Answer cooldowns privately."""
        await on_cooldown(interaction, error)


async def setup(bot: commands.Bot) -> None:
    """Load the npm cog."""
    await bot.add_cog(Npm(env_url(os.environ, "NPM_REGISTRY_URL", DEFAULT_NPM_REGISTRY_URL)))
