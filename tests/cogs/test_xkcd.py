"""Tests for /xkcd against a mocked xkcd JSON API."""

from __future__ import annotations

import random

import httpx
import pytest
import respx

from cogs.xkcd import Xkcd, fetch_random_comic
from tests.cogs.conftest import FakeInteraction

BASE = "https://xkcd.test"


def comic(num: int) -> dict[str, object]:
    return {
        "num": num,
        "safe_title": f"Comic {num}",
        "alt": "alt text",
        "img": f"https://imgs.xkcd.com/{num}.png",
    }


async def test_xkcd_latest_embed(interaction: FakeInteraction) -> None:
    cog = Xkcd(BASE)
    with respx.mock(using="httpx") as mock:
        mock.get(f"{BASE}/info.0.json").respond(json=comic(3000))
        await cog.xkcd.callback(cog, interaction, None)  # type: ignore[arg-type]
    embed = interaction.reply.embed
    assert embed is not None and embed.title == "xkcd 3000: Comic 3000"
    assert embed.image.url == "https://imgs.xkcd.com/3000.png"
    assert cog.latest_seen == 3000


async def test_xkcd_random_never_picks_404() -> None:
    with respx.mock(using="httpx") as mock:
        mock.get(f"{BASE}/info.0.json").respond(json=comic(405))
        mock.get(url__regex=rf"{BASE}/\d+/info.0.json").mock(
            side_effect=lambda request: httpx.Response(200, json=comic(int(request.url.path.split("/")[1])))
        )
        seen = {(await fetch_random_comic(BASE, random.Random(seed))).num for seed in range(30)}
    assert 404 not in seen and seen <= set(range(1, 406))


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        (httpx.Response(404), "There is no xkcd number 99999."),
        (httpx.Response(503), "xkcd is unavailable"),
        (httpx.Response(200, json={"title": "no num"}), "could not understand"),
    ],
)
async def test_xkcd_failures(interaction: FakeInteraction, response: httpx.Response, expected: str) -> None:
    cog = Xkcd(BASE)
    with respx.mock(using="httpx") as mock:
        mock.get(f"{BASE}/99999/info.0.json").mock(return_value=response)
        await cog.xkcd.callback(cog, interaction, 99999)  # type: ignore[arg-type]
    assert expected in (interaction.reply.content or "") and interaction.reply.ephemeral


async def test_xkcd_negative_rejected_without_http(interaction: FakeInteraction) -> None:
    cog = Xkcd(BASE)
    with respx.mock(using="httpx", assert_all_called=False) as mock:
        route = mock.route()
        await cog.xkcd.callback(cog, interaction, -1)  # type: ignore[arg-type]
    assert not route.called and interaction.reply.ephemeral


async def test_xkcd_autocomplete_is_offline(interaction: FakeInteraction) -> None:
    cog = Xkcd(BASE)
    choices = await cog.xkcd_autocomplete(interaction, "12")  # type: ignore[arg-type]
    assert [c.value for c in choices] == [12, 0]


async def test_xkcd_timeout(interaction: FakeInteraction) -> None:
    cog = Xkcd(BASE)
    with respx.mock(using="httpx") as mock:
        mock.get(f"{BASE}/1/info.0.json").mock(side_effect=httpx.ReadTimeout("slow"))
        await cog.xkcd.callback(cog, interaction, 1)  # type: ignore[arg-type]
    assert "xkcd took too long" in (interaction.reply.content or "") and interaction.reply.ephemeral


@pytest.mark.parametrize("latest", [0, -5, "3000", None, 2.5, True])
async def test_xkcd_random_with_a_bad_latest_number_is_a_sentence(
    interaction: FakeInteraction, latest: object
) -> None:
    cog = Xkcd(BASE)
    with respx.mock(using="httpx") as mock:
        mock.get(f"{BASE}/info.0.json").respond(json={**comic(1), "num": latest})
        await cog.xkcd.callback(cog, interaction, 0)  # type: ignore[arg-type]
    assert interaction.reply.content == "xkcd sent an answer we could not understand."
    assert interaction.reply.ephemeral


@pytest.mark.parametrize(
    ("number", "expected"),
    [
        (None, "xkcd can't find its latest comic right now; please try again later."),
        (0, "xkcd couldn't find a comic to pick at random; please try again later."),
    ],
)
async def test_xkcd_latest_not_found_says_so_without_none(
    interaction: FakeInteraction, number: int | None, expected: str
) -> None:
    cog = Xkcd(BASE)
    with respx.mock(using="httpx") as mock:
        mock.get(f"{BASE}/info.0.json").respond(404)
        await cog.xkcd.callback(cog, interaction, number)  # type: ignore[arg-type]
    assert interaction.reply.ephemeral and interaction.reply.content == expected


async def test_xkcd_random_pick_not_found_is_a_sentence(interaction: FakeInteraction) -> None:
    cog = Xkcd(BASE)
    with respx.mock(using="httpx") as mock:
        mock.get(f"{BASE}/info.0.json").respond(json=comic(3000))
        mock.get(url__regex=rf"{BASE}/\d+/info.0.json").respond(404)
        await cog.xkcd.callback(cog, interaction, 0)  # type: ignore[arg-type]
    assert (
        interaction.reply.content == "xkcd couldn't find a comic to pick at random; please try again later."
    )
