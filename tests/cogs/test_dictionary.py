"""Tests for /define against a mocked dictionaryapi.dev."""

from __future__ import annotations

import httpx
import pytest
import respx

from cogs.dictionary import Dictionary
from tests.cogs.conftest import FakeInteraction

BASE = "https://dict.test/api/v2/entries/en"
ENTRY = [
    {
        "word": "hello",
        "phonetic": "/həˈləʊ/",  # noqa: RUF001
        "meanings": [
            {"partOfSpeech": "exclamation", "definitions": [{"definition": "used as a greeting"}]},
            {"partOfSpeech": "noun", "definitions": []},
        ],
    }
]
NOT_FOUND = {"title": "No Definitions Found", "message": "Sorry pal", "resolution": "Try the web."}


async def test_define_success_embed(interaction: FakeInteraction) -> None:
    cog = Dictionary(BASE)
    with respx.mock(using="httpx") as mock:
        mock.get(f"{BASE}/hello").respond(json=ENTRY)
        await cog.define.callback(cog, interaction, "hello")  # type: ignore[arg-type]
    embed = interaction.reply.embed
    assert embed is not None and embed.title == "hello"
    assert [(f.name, f.value) for f in embed.fields] == [("exclamation", "used as a greeting")]


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        (httpx.Response(404, json=NOT_FOUND), "No definition found for `blorp`."),
        (httpx.Response(429), "rate-limiting us; try again in a little while"),
        (httpx.Response(200, json=NOT_FOUND), "could not understand"),
        (httpx.Response(200, text="<"), "could not understand"),
    ],
)
async def test_define_failures(interaction: FakeInteraction, response: httpx.Response, expected: str) -> None:
    cog = Dictionary(BASE)
    with respx.mock(using="httpx") as mock:
        mock.get(f"{BASE}/blorp").mock(return_value=response)
        await cog.define.callback(cog, interaction, "blorp")  # type: ignore[arg-type]
    assert expected in (interaction.reply.content or "") and interaction.reply.ephemeral


async def test_define_timeout(interaction: FakeInteraction) -> None:
    cog = Dictionary(BASE)
    with respx.mock(using="httpx") as mock:
        mock.get(f"{BASE}/slow").mock(side_effect=httpx.ReadTimeout("slow"))
        await cog.define.callback(cog, interaction, "slow")  # type: ignore[arg-type]
    assert "took too long" in (interaction.reply.content or "")


@pytest.mark.parametrize("junk", ["", "../../admin", "a?b=c", "%2e%2e", "abc\u200b", "x" * 65, "123"])
async def test_define_junk_rejected_without_http(interaction: FakeInteraction, junk: str) -> None:
    cog = Dictionary(BASE)
    with respx.mock(using="httpx", assert_all_called=False) as mock:
        route = mock.route()
        await cog.define.callback(cog, interaction, junk)  # type: ignore[arg-type]
    assert not route.called


async def test_define_encodes_spaces_and_apostrophes(interaction: FakeInteraction) -> None:
    cog = Dictionary(BASE)
    with respx.mock(using="httpx") as mock:
        route = mock.get(url__startswith=BASE).respond(json=ENTRY)
        await cog.define.callback(cog, interaction, "rock 'n' roll")  # type: ignore[arg-type]
    assert route.calls.last.request.url.raw_path == b"/api/v2/entries/en/rock%20%27n%27%20roll"
