"""Tests for embeds: within Discord's limits, web links only."""

from __future__ import annotations

from collections.abc import Callable

import discord
import pytest

from cogs._embeds import CHOICE_NAME_LIMIT, TOTAL_LIMIT, cap, make_embed, markdown_link, truncate, web_url
from cogs._replies import error_message
from cogs.crates import Crate, build_crate_embed
from cogs.github import Repo, User, build_repo_embed, build_user_embed
from cogs.npm import NpmPackage, build_npm_embed
from cogs.pypi import Package, build_package_embed
from cogs.wiki import Summary, build_summary_embed
from cogs.xkcd import Comic, build_comic_embed
from services.errors import ClientClosingError


def test_truncate_keeps_short_text() -> None:
    assert truncate("abc", 10) == "abc"


def test_truncate_cuts_with_ellipsis_within_limit() -> None:
    out = truncate("word " * 100, 50)
    assert len(out) <= 50 and out.endswith("…")


def test_make_embed_stays_within_every_limit() -> None:
    embed = make_embed(
        title="t" * 1000,
        description="d" * 10000,
        fields=[("n" * 500, "v" * 5000)] * 40,
        footer="f" * 5000,
    )
    assert len(embed.title or "") <= 256
    assert len(embed.description or "") <= 4096
    assert len(embed.fields) <= 25
    assert all(len(f.value or "") <= 1024 and len(f.name or "") <= 256 for f in embed.fields)
    assert len(embed) <= TOTAL_LIMIT


def test_error_message_during_shutdown_says_so() -> None:
    assert "shutting down" in error_message(ClientClosingError("closing"), "PyPI", "No such package.")


GOOD_URLS = [
    "https://example.com",
    "http://example.com:8080/a?b=c#d",
    "https://de.wikipedia.org/wiki/Köln",
    "https://[2001:db8::1]/x",
    "HTTPS://EXAMPLE.COM/",
]
BAD_URLS = [
    "javascript:alert(1)",
    "JavaScript://example.com/%0aalert(1)",
    "data:text/html,<b>x</b>",
    "ftp://example.com/file",
    "//example.com/no-scheme",
    "/relative/path",
    "https://",
    "https:///no-host",
    "https://exa mple.com",
    "https://example.com/\nnext",
    "https://example.com:99999/",
    "https://example.com:port/",
    "http://[::1",
    "https://[not-an-ip]/",
    "https://a<b>.com/",
    "https:\\\\example.com",
    "https://example.com/" + "x" * 3000,
    "",
    None,
]


@pytest.mark.parametrize("url", GOOD_URLS)
def test_web_url_keeps_well_formed_web_links(url: str) -> None:
    assert web_url(url) == url


@pytest.mark.parametrize("url", BAD_URLS)
def test_web_url_drops_everything_else(url: str | None) -> None:
    assert web_url(url) is None


@pytest.mark.parametrize("bad", BAD_URLS)
def test_make_embed_drops_a_bad_url_and_keeps_the_rest(bad: str | None) -> None:
    embed = make_embed(
        title="Title",
        description="Text",
        url=bad,
        thumbnail=bad,
        image=bad,
        author="Someone",
        author_url=bad,
        author_icon=bad,
        fields=[("Name", "Value")],
        footer="Footer",
    )
    data = embed.to_dict()
    assert "url" not in data and "thumbnail" not in data and "image" not in data
    assert data["author"] == {"name": "Someone"}
    assert (data["title"], data["description"], data["footer"]["text"]) == ("Title", "Text", "Footer")
    assert [f["name"] for f in data["fields"]] == ["Name"]


def test_make_embed_keeps_good_urls_and_caps_the_author() -> None:
    url = "https://example.com/a"
    embed = make_embed(title="t", url=url, thumbnail=url, image=url, author="a" * 300, author_icon=url)
    assert (embed.url, embed.thumbnail.url, embed.image.url, embed.author.icon_url) == (url, url, url, url)
    assert len(embed.author.name or "") == 256


def test_markdown_link_escapes_the_label_and_the_target() -> None:
    assert markdown_link("Docs", "javascript:alert(1)") is None
    link = markdown_link("a](javascript:x) *b*" + "x" * 200, "https://example.com/a_(b)")
    assert link is not None and link.endswith("](https://example.com/a_%28b%29)")
    assert len(link) < 64 + 40 and link.startswith("[a\\](javascript")  # the label's ] is escaped


def test_cap_fits_each_place() -> None:
    assert len(cap("n" * 5000, CHOICE_NAME_LIMIT)) == CHOICE_NAME_LIMIT
    assert cap("  short  ", CHOICE_NAME_LIMIT) == "short"


HOSTILE = "javascript:alert(1)"


def hostile_embeds() -> list[discord.Embed]:
    """Every lookup's embed built from an upstream answer whose links are all hostile."""
    return [
        build_repo_embed(Repo("o/r", HOSTILE, None, 1, 2, 3, None, None, "data:image/png;base64,x")),
        build_user_embed(User("octocat", HOSTILE, None, None, 1, 2, "vbscript:x")),
        build_package_embed(Package("p", "1", None, None, HOSTILE, None, (("Home", HOSTILE),))),
        build_summary_embed(Summary("T", "x", HOSTILE, "file:///etc/passwd")),
        build_comic_embed(Comic(1, "t", "alt", HOSTILE)),
        build_crate_embed(Crate("c", "1", None, 1, HOSTILE, "ftp://docs")),
        build_npm_embed(NpmPackage("n", "1", None, None, HOSTILE)),
    ]


def test_no_lookup_embed_carries_a_non_web_link() -> None:
    for embed in hostile_embeds():
        data = embed.to_dict()
        for key in ("url", "thumbnail", "image", "author"):
            value = data.get(key)
            link = (
                value if isinstance(value, str) else (value or {}).get("url") or (value or {}).get("icon_url")
            )
            assert link is None or link.startswith(("https://", "http://")), (data.get("title"), key, link)
        assert all(HOSTILE not in field["value"] for field in data.get("fields", []))
        assert data["title"]


@pytest.mark.parametrize(
    ("embed", "url"),
    [
        (lambda: build_crate_embed(Crate("a b", "1", None, 1, None, None)), "https://crates.io/crates/a%20b"),
        (
            lambda: build_npm_embed(NpmPackage("a b", "1", None, None, None)),
            "https://www.npmjs.com/package/a%20b",
        ),
        (
            lambda: build_npm_embed(NpmPackage("@types/node", "1", None, None, None)),
            "https://www.npmjs.com/package/%40types/node",
        ),
        (lambda: build_crate_embed(Crate("..", "1", None, 1, None, None)), None),
    ],
)
def test_links_built_from_upstream_names_are_encoded_like_requests(
    embed: Callable[[], discord.Embed], url: str | None
) -> None:
    assert embed().url == url
