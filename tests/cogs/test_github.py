"""Tests for /github repo and /github user against a mocked GitHub API."""

from __future__ import annotations

import httpx
import pytest
import respx

from cogs._validation import InputError
from cogs.github import GitHub, GitHubSettings, fetch_repo
from tests.cogs.conftest import FakeInteraction

BASE = "https://api.github.test"
REPO = {
    "full_name": "python/cpython",
    "html_url": "https://github.com/python/cpython",
    "description": "The Python programming language",
    "stargazers_count": 62000,
    "forks_count": 29000,
    "open_issues_count": 9000,
    "language": "Python",
    "license": {"key": "other", "spdx_id": "NOASSERTION"},
    "owner": {"login": "python", "avatar_url": "https://avatars.githubusercontent.com/u/1525981"},
}
USER = {"login": "octocat", "html_url": "https://github.com/octocat", "name": None, "public_repos": 8}


def cog(token: str | None = None) -> GitHub:
    return GitHub(GitHubSettings(api_url=BASE, token=token))


async def test_github_repo_success_embed_and_headers(interaction: FakeInteraction) -> None:
    c = cog("secret-token")
    with respx.mock(using="httpx") as mock:
        route = mock.get(f"{BASE}/repos/python/cpython").respond(json=REPO)
        await c.repo.callback(c, interaction, "python/cpython")  # type: ignore[arg-type]
    request = route.calls.last.request
    assert request.headers["Accept"] == "application/vnd.github+json"
    assert request.headers["X-GitHub-Api-Version"] == "2022-11-28"
    assert request.headers["Authorization"] == "Bearer secret-token"
    embed = interaction.reply.embed
    assert embed is not None and embed.title == "python/cpython" and not interaction.reply.ephemeral
    assert {f.name: f.value for f in embed.fields}["Stars"] == "62,000"
    assert "secret-token" not in repr(c.settings)


async def test_github_user_tolerates_missing_fields(interaction: FakeInteraction) -> None:
    c = cog()
    with respx.mock(using="httpx") as mock:
        route = mock.get(f"{BASE}/users/octocat").respond(json=USER)
        await c.user.callback(c, interaction, "octocat")  # type: ignore[arg-type]
    assert "Authorization" not in route.calls.last.request.headers
    assert interaction.reply.embed is not None and interaction.reply.embed.title == "octocat"


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        (httpx.Response(404), "No GitHub repository named `a/b`."),
        (
            httpx.Response(403, headers={"x-ratelimit-remaining": "0", "retry-after": "720"}),
            "GitHub is rate-limiting us; try again in 12 minutes.",
        ),
        (httpx.Response(502), "GitHub is unavailable"),
        (httpx.Response(200, text="<html>"), "could not understand"),
        (httpx.Response(200, json={"id": 1}), "could not understand"),
    ],
)
async def test_github_repo_failures(
    interaction: FakeInteraction, response: httpx.Response, expected: str
) -> None:
    c = cog()
    with respx.mock(using="httpx") as mock:
        mock.get(f"{BASE}/repos/a/b").mock(return_value=response)
        await c.repo.callback(c, interaction, "a/b")  # type: ignore[arg-type]
    assert expected in (interaction.reply.content or "") and interaction.reply.ephemeral


async def test_github_repo_timeout(interaction: FakeInteraction) -> None:
    c = cog()
    with respx.mock(using="httpx") as mock:
        mock.get(f"{BASE}/repos/a/b").mock(side_effect=httpx.ConnectTimeout("slow"))
        await c.repo.callback(c, interaction, "a/b")  # type: ignore[arg-type]
    assert "took too long" in (interaction.reply.content or "")


@pytest.mark.parametrize(
    "junk", ["", "cpython", "a/b/c", "../../admin", "a/..", "a?b=c/x", "a/b\x07", "a/" + "x" * 200]
)
async def test_github_repo_junk_rejected_without_http(interaction: FakeInteraction, junk: str) -> None:
    c = cog()
    with respx.mock(using="httpx", assert_all_called=False) as mock:
        route = mock.route()
        await c.repo.callback(c, interaction, junk)  # type: ignore[arg-type]
    assert not route.called and [s.kind for s in interaction.sent] == ["response"]


async def test_github_fetch_encodes_hostile_segments() -> None:
    with respx.mock(using="httpx") as mock:
        route = mock.get(url__startswith=BASE).respond(json=REPO)
        await fetch_repo(GitHubSettings(api_url=BASE), "a b", "a?b=c")
    assert route.calls.last.request.url.raw_path == b"/repos/a%20b/a%3Fb%3Dc"


async def test_github_fetch_refuses_a_dot_segment_before_any_request() -> None:
    with respx.mock(using="httpx", assert_all_called=False) as mock:
        route = mock.route()
        with pytest.raises(InputError):
            await fetch_repo(GitHubSettings(api_url=BASE), "..", "x")
    assert not route.called


async def test_github_user_not_found(interaction: FakeInteraction) -> None:
    c = cog()
    with respx.mock(using="httpx") as mock:
        mock.get(f"{BASE}/users/nobody-here").respond(404, json={"message": "Not Found"})
        await c.user.callback(c, interaction, "nobody-here")  # type: ignore[arg-type]
    assert interaction.reply.content == "No GitHub user named `nobody-here`." and interaction.reply.ephemeral


@pytest.mark.parametrize("junk", ["", "a b", "../admin", "-starts-with-dash", "x" * 40, "oct\u0000cat"])
async def test_github_user_junk_rejected_without_http(interaction: FakeInteraction, junk: str) -> None:
    c = cog()
    with respx.mock(using="httpx", assert_all_called=False) as mock:
        route = mock.route()
        await c.user.callback(c, interaction, junk)  # type: ignore[arg-type]
    assert not route.called and [s.kind for s in interaction.sent] == ["response"]


async def test_github_hostile_links_are_dropped_and_the_answer_still_sent(
    interaction: FakeInteraction,
) -> None:
    c = cog()
    hostile = {
        **REPO,
        "html_url": "javascript:alert(1)",
        "owner": {"avatar_url": "data:image/png;base64,AAAA"},
    }
    with respx.mock(using="httpx") as mock:
        mock.get(f"{BASE}/repos/python/cpython").respond(json=hostile)
        await c.repo.callback(c, interaction, "python/cpython")  # type: ignore[arg-type]
    embed = interaction.reply.embed
    assert embed is not None and not interaction.reply.ephemeral
    assert embed.title == "python/cpython" and embed.url is None and embed.thumbnail.url is None
