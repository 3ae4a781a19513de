"""Tests for input checks and URL building from user text."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import respx

from cogs._embeds import make_embed
from cogs._replies import answer
from cogs._validation import DOT_SEGMENT_REFUSAL, InputError, clean, join_url, page_url
from cogs.crates import Crates
from cogs.dictionary import Dictionary
from cogs.github import GitHub, GitHubSettings
from cogs.npm import Npm
from cogs.pypi import PyPI
from cogs.wiki import Wiki, WikiSettings
from tests.cogs.conftest import FakeInteraction

BASE = "https://api.test"
DOT_SPELLINGS = [
    ".",
    "..",
    "%2e",
    "%2E%2e",
    "%252e%252E",  # decoded twice
    "\uff0e",  # full-width full stop
    "\uff0e\uff0e",
    "\u2025",  # two dot leader: NFKC gives ".."
    ".\uff0e",
    "..;jsessionid=x",  # path parameters are dropped before normalising by some servers
    "a/../b",
    "..%2Fadmin",
    "..\\admin",
]


@pytest.mark.parametrize("value", DOT_SPELLINGS)
def test_join_url_refuses_dot_segments_in_any_spelling(value: str) -> None:
    with pytest.raises(InputError, match="aren't names I can ask for"):
        join_url(BASE, "page", value)


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        ("...", "..."),
        ("a..b", "a..b"),
        (".env", ".env"),
        ("AC/DC", "AC%2FDC"),
        ("50%", "50%25"),
        ("C++", "C%2B%2B"),
    ],
)
def test_join_url_keeps_ordinary_names_as_one_encoded_segment(value: str, encoded: str) -> None:
    assert join_url(BASE + "/", "page", value) == f"{BASE}/page/{encoded}"


def test_page_url_drops_a_dot_segment_link_instead_of_raising() -> None:
    assert page_url("https://crates.io/crates", "..") is None
    assert page_url("https://crates.io/crates", "a b") == "https://crates.io/crates/a%20b"


@pytest.mark.parametrize("value", DOT_SPELLINGS)
def test_clean_path_refuses_dot_segments(value: str) -> None:
    with pytest.raises(InputError) as info:
        clean(value, what="name", max_length=100, path=True)
    assert str(info.value) == DOT_SEGMENT_REFUSAL


def lookups() -> list[tuple[str, Callable[[FakeInteraction, str], Awaitable[Any]]]]:
    """Every command that puts user text into a URL path, as (name, call)."""
    wiki, pypi, crates, npm = Wiki(WikiSettings(BASE)), PyPI(BASE), Crates(BASE), Npm(BASE)
    define, github = Dictionary(BASE), GitHub(GitHubSettings(api_url=BASE))
    return [
        ("wiki", lambda i, v: wiki.wiki.callback(wiki, i, v)),  # type: ignore[arg-type]
        ("pypi", lambda i, v: pypi.pypi.callback(pypi, i, v)),  # type: ignore[arg-type]
        ("crate", lambda i, v: crates.crate.callback(crates, i, v)),  # type: ignore[arg-type]
        ("npm", lambda i, v: npm.npm.callback(npm, i, v)),  # type: ignore[arg-type]
        ("define", lambda i, v: define.define.callback(define, i, v)),  # type: ignore[arg-type]
        ("github repo", lambda i, v: github.repo.callback(github, i, f"python/{v}")),  # type: ignore[arg-type]
        ("github user", lambda i, v: github.user.callback(github, i, v)),  # type: ignore[arg-type]
    ]


@pytest.mark.parametrize("value", DOT_SPELLINGS)
async def test_every_lookup_refuses_dot_segments_politely_before_any_request(value: str) -> None:
    for name, call in lookups():
        interaction = FakeInteraction()
        with respx.mock(using="httpx", assert_all_called=False) as mock:
            route = mock.route()
            await call(interaction, value)
        assert not route.called, name
        assert [s.kind for s in interaction.sent] == ["response"], name
        assert interaction.reply.ephemeral and (interaction.reply.content or "").endswith("."), name


async def test_answer_turns_a_refused_url_into_a_private_reply(interaction: FakeInteraction) -> None:
    async def fetch() -> None:
        join_url(BASE, "..")

    await answer(
        interaction, service="Test", not_found="none", fetch=fetch, build=lambda _: make_embed(title="x")
    )
    assert interaction.reply.content == DOT_SEGMENT_REFUSAL and interaction.reply.ephemeral
