"""/github repo and /github user: lookups on the GitHub REST API."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

import discord
from discord import app_commands
from discord.ext import commands

from cogs._embeds import make_embed
from cogs._replies import answer, as_dict, inline_code, number, on_cooldown, reject, text
from cogs._validation import InputError, clean, env_url, join_url
from services.config import env_optional_str
from services.errors import BadResponseError
from services.http_client import http_client

DEFAULT_GITHUB_API_URL = "https://api.github.com"
LOGIN_PATTERN = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})")
REPO_NAME_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,100}")


@dataclass(frozen=True, slots=True)
class GitHubSettings:
    """Where the GitHub API lives, and the optional token (never logged: repr hides it)."""

    api_url: str = DEFAULT_GITHUB_API_URL
    token: str | None = None

    def __repr__(self) -> str:
        return f"GitHubSettings(api_url={self.api_url!r}, token={'<set>' if self.token else None})"

    @property
    def headers(self) -> dict[str, str]:
        """Headers every GitHub request carries."""
        headers = {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": "2022-11-28"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> GitHubSettings:
        """Read GITHUB_API_URL and GITHUB_TOKEN."""
        env = os.environ if env is None else env
        return cls(
            api_url=env_url(env, "GITHUB_API_URL", DEFAULT_GITHUB_API_URL),
            token=env_optional_str(env, "GITHUB_TOKEN"),
        )


@dataclass(frozen=True, slots=True)
class Repo:
    """A repository as the embed shows it."""

    full_name: str
    url: str
    description: str | None
    stars: int
    forks: int
    open_issues: int
    language: str | None
    license: str | None
    owner_avatar: str | None


@dataclass(frozen=True, slots=True)
class User:
    """A GitHub account as the embed shows it."""

    login: str
    url: str
    name: str | None
    bio: str | None
    public_repos: int
    followers: int
    avatar: str | None


async def fetch_repo(settings: GitHubSettings, owner: str, name: str) -> Repo:
    """Fetch one repository."""
    url = join_url(settings.api_url, "repos", owner, name)
    data = as_dict(await http_client.get_json(url, headers=settings.headers), "GitHub")
    full_name, html_url = text(data, "full_name"), text(data, "html_url")
    if not full_name or not html_url:
        raise BadResponseError("GitHub repo answer has no full_name/html_url")
    licence = data.get("license")
    owner_data = data.get("owner")
    return Repo(
        full_name=full_name,
        url=html_url,
        description=text(data, "description"),
        stars=number(data, "stargazers_count") or 0,
        forks=number(data, "forks_count") or 0,
        open_issues=number(data, "open_issues_count") or 0,
        language=text(data, "language"),
        license=text(licence, "spdx_id") if isinstance(licence, dict) else None,
        owner_avatar=text(owner_data, "avatar_url") if isinstance(owner_data, dict) else None,
    )


async def fetch_user(settings: GitHubSettings, login: str) -> User:
    """Fetch one user or organisation."""
    url = join_url(settings.api_url, "users", login)
    data = as_dict(await http_client.get_json(url, headers=settings.headers), "GitHub")
    found, html_url = text(data, "login"), text(data, "html_url")
    if not found or not html_url:
        raise BadResponseError("GitHub user answer has no login/html_url")
    return User(
        login=found,
        url=html_url,
        name=text(data, "name"),
        bio=text(data, "bio"),
        public_repos=number(data, "public_repos") or 0,
        followers=number(data, "followers") or 0,
        avatar=text(data, "avatar_url"),
    )


def build_repo_embed(repo: Repo) -> discord.Embed:
    """Shape a Repo into an embed."""
    fields = [
        ("Stars", f"{repo.stars:,}"),
        ("Forks", f"{repo.forks:,}"),
        ("Open issues", f"{repo.open_issues:,}"),
    ]
    if repo.language:
        fields.append(("Language", repo.language))
    if repo.license:
        fields.append(("License", repo.license))
    return make_embed(
        title=repo.full_name,
        description=repo.description or "",
        url=repo.url,
        fields=fields,
        thumbnail=repo.owner_avatar,
        footer="GitHub",
    )


def build_user_embed(user: User) -> discord.Embed:
    """Shape a User into an embed."""
    title = f"{user.name} ({user.login})" if user.name else user.login
    return make_embed(
        title=title,
        description=user.bio or "",
        url=user.url,
        fields=[("Public repos", f"{user.public_repos:,}"), ("Followers", f"{user.followers:,}")],
        thumbnail=user.avatar,
        footer="GitHub",
    )


def parse_repo(value: str) -> tuple[str, str]:
    """Split 'owner/name' and check both parts, or raise InputError."""
    value = clean(value, what="repository", max_length=140, path=True)
    owner, slash, name = value.partition("/")
    if not slash:
        raise InputError("Give the repository as `owner/name`, e.g. `python/cpython`.")
    if not LOGIN_PATTERN.fullmatch(owner) or not REPO_NAME_PATTERN.fullmatch(name):
        raise InputError("That doesn't look like a valid `owner/name` repository.")
    return owner, name


class GitHub(commands.GroupCog, group_name="github"):
    """GitHub repository and user lookups."""

    def __init__(self, settings: GitHubSettings) -> None:
        self.settings = settings
        super().__init__()

    @app_commands.command()
    @app_commands.describe(repository="owner/name, e.g. python/cpython")
    @app_commands.checks.cooldown(3, 30.0, key=lambda i: i.user.id)
    async def repo(self, interaction: discord.Interaction, repository: str) -> None:
        """Show a GitHub repository."""
        try:
            owner, name = parse_repo(repository)
        except InputError as exc:
            await reject(interaction, str(exc))
            return
        await answer(
            interaction,
            service="GitHub",
            not_found=f"No GitHub repository named {inline_code(f'{owner}/{name}')}.",
            fetch=lambda: fetch_repo(self.settings, owner, name),
            build=build_repo_embed,
        )

    @app_commands.command()
    @app_commands.describe(name="A GitHub username or organisation")
    @app_commands.checks.cooldown(3, 30.0, key=lambda i: i.user.id)
    async def user(self, interaction: discord.Interaction, name: str) -> None:
        """Show a GitHub user or organisation."""
        try:
            login = clean(name, what="GitHub username", max_length=39, pattern=LOGIN_PATTERN, path=True)
        except InputError as exc:
            await reject(interaction, str(exc))
            return
        await answer(
            interaction,
            service="GitHub",
            not_found=f"No GitHub user named {inline_code(login)}.",
            fetch=lambda: fetch_user(self.settings, login),
            build=build_user_embed,
        )

    async def cog_app_command_error(
        self, interaction: discord.Interaction, error: app_commands.AppCommandError
    ) -> None:
        """Answer cooldowns privately."""
        await on_cooldown(interaction, error)


async def setup(bot: commands.Bot) -> None:
    """Load the GitHub cog."""
    await bot.add_cog(GitHub(GitHubSettings.from_env()))
