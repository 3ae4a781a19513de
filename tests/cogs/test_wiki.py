"""Tests for /wiki against a mocked Wikipedia."""

from __future__ import annotations

import httpx
import pytest
import respx

from cogs.wiki import Wiki, WikiSettings
from services.config import SettingsError
from tests.cogs.conftest import FakeInteraction

BASE = "https://en.wiki.test"
SUMMARY = {
    "type": "standard",
    "title": "Python (programming language)",
    "extract": "Python is a high-level, general-purpose programming language." * 200,
    "content_urls": {"desktop": {"page": "https://en.wikipedia.org/wiki/Python_(programming_language)"}},
}


def cog() -> Wiki:
    return Wiki(WikiSettings(base_url=BASE))


async def test_wiki_summary_embed_truncated(interaction: FakeInteraction) -> None:
    c = cog()
    with respx.mock(using="httpx") as mock:
        route = mock.get(url__startswith=f"{BASE}/api/rest_v1/page/summary/").respond(json=SUMMARY)
        await c.wiki.callback(c, interaction, "Python (programming language)")  # type: ignore[arg-type]
    assert (
        route.calls.last.request.url.raw_path
        == b"/api/rest_v1/page/summary/Python_%28programming_language%29"
    )
    embed = interaction.reply.embed
    assert embed is not None and embed.title == "Python (programming language)"
    assert len(embed.description or "") <= 4096


async def test_wiki_falls_back_to_search(interaction: FakeInteraction) -> None:
    c = cog()
    with respx.mock(using="httpx") as mock:
        mock.get(f"{BASE}/api/rest_v1/page/summary/pythn_lang").respond(404)
        search = mock.get(f"{BASE}/w/api.php").respond(
            json={"query": {"search": [{"title": "Python (programming language)"}]}}
        )
        mock.get(f"{BASE}/api/rest_v1/page/summary/Python_%28programming_language%29").respond(json=SUMMARY)
        await c.wiki.callback(c, interaction, "pythn lang")  # type: ignore[arg-type]
    assert search.calls.last.request.url.params["srsearch"] == "pythn lang"
    assert interaction.reply.embed is not None


@pytest.mark.parametrize(
    ("responses", "expected"),
    [
        ([httpx.Response(404), httpx.Response(200, json={"query": {"search": []}})], "no page matching"),
        (
            [httpx.Response(429, headers={"Retry-After": "120"})],
            "Wikipedia is rate-limiting us; try again in 2 minutes.",
        ),
        ([httpx.Response(200, text="nope")], "could not understand"),
        ([httpx.Response(404), httpx.Response(200, json={"oops": 1})], "could not understand"),
    ],
)
async def test_wiki_failures(
    interaction: FakeInteraction, responses: list[httpx.Response], expected: str
) -> None:
    c = cog()
    with respx.mock(using="httpx", assert_all_called=False) as mock:
        mock.get(f"{BASE}/api/rest_v1/page/summary/zzz").mock(return_value=responses[0])
        if len(responses) > 1:
            mock.get(f"{BASE}/w/api.php").mock(return_value=responses[1])
        await c.wiki.callback(c, interaction, "zzz")  # type: ignore[arg-type]
    assert expected in (interaction.reply.content or "") and interaction.reply.ephemeral


async def test_wiki_hostile_title_stays_one_segment() -> None:
    c = cog()
    interaction = FakeInteraction()
    with respx.mock(using="httpx") as mock:
        route = mock.get(url__startswith=BASE).respond(json=SUMMARY)
        await c.wiki.callback(c, interaction, "AC/DC?x=1#y")  # type: ignore[arg-type]
    assert route.calls[0].request.url.raw_path == b"/api/rest_v1/page/summary/AC%2FDC%3Fx%3D1%23y"


@pytest.mark.parametrize("junk", ["", "  ", "a\x1bb", "x" * 256])
async def test_wiki_junk_rejected_without_http(interaction: FakeInteraction, junk: str) -> None:
    c = cog()
    with respx.mock(using="httpx", assert_all_called=False) as mock:
        route = mock.route()
        await c.wiki.callback(c, interaction, junk)  # type: ignore[arg-type]
    assert not route.called


def test_wiki_settings_language() -> None:
    assert WikiSettings.from_env({"WIKIPEDIA_LANGUAGE": "de"}).base_url == "https://de.wikipedia.org"
    with pytest.raises(SettingsError):
        WikiSettings.from_env({"WIKIPEDIA_LANGUAGE": "de/../x"})
    with pytest.raises(SettingsError):
        WikiSettings.from_env({"WIKIPEDIA_API_URL": "ftp://x"})


async def test_wiki_timeout(interaction: FakeInteraction) -> None:
    c = cog()
    with respx.mock(using="httpx") as mock:
        mock.get(f"{BASE}/api/rest_v1/page/summary/zzz").mock(side_effect=httpx.ConnectTimeout("slow"))
        await c.wiki.callback(c, interaction, "zzz")  # type: ignore[arg-type]
    assert "Wikipedia took too long" in (interaction.reply.content or "") and interaction.reply.ephemeral


async def test_wiki_not_found_keeps_a_backtick_in_the_query_from_breaking_the_reply(
    interaction: FakeInteraction,
) -> None:
    c = cog()
    with respx.mock(using="httpx", assert_all_called=False) as mock:
        mock.get(url__regex=rf"{BASE}/api/rest_v1/page/summary/.*").respond(404)
        mock.get(f"{BASE}/w/api.php").respond(json={"query": {"search": []}})
        await c.wiki.callback(c, interaction, "a`b")  # type: ignore[arg-type]
    content = interaction.reply.content or ""
    assert content.count("`") == 2, content  # one inline-code span, opened and closed
    assert "a\u02cbb" in content
