"""Tests for /npm and /crate against mocked registries."""

from __future__ import annotations

import httpx
import pytest
import respx

from cogs.crates import Crates, fetch_crate
from cogs.npm import Npm, fetch_npm_package
from tests.cogs.conftest import FakeInteraction

NPM = "https://registry.npm.test"
CRATES = "https://crates.test/api/v1"
PACKUMENT = {
    "name": "@types/node",
    "dist-tags": {"latest": "22.5.0"},
    "versions": {"22.5.0": {"description": "TypeScript definitions for node", "license": "MIT"}},
}
CRATE = {
    "crate": {
        "name": "serde",
        "max_stable_version": "1.0.210",
        "description": "A serialization framework",
        "downloads": 400000000,
    }
}


async def test_npm_scoped_success_and_encoding(interaction: FakeInteraction) -> None:
    cog = Npm(NPM)
    with respx.mock(using="httpx") as mock:
        route = mock.get(url__startswith=NPM).respond(json=PACKUMENT)
        await cog.npm.callback(cog, interaction, "@types/node")  # type: ignore[arg-type]
    assert route.calls.last.request.url.raw_path == b"/@types%2Fnode"
    assert interaction.reply.embed is not None and interaction.reply.embed.title == "@types/node 22.5.0"


async def test_npm_fetch_encodes_hostile_name() -> None:
    with respx.mock(using="httpx") as mock:
        route = mock.get(url__startswith=NPM).respond(json=PACKUMENT)
        await fetch_npm_package(NPM, "a?b=c")
    assert route.calls.last.request.url.raw_path == b"/a%3Fb%3Dc"


@pytest.mark.parametrize(
    "junk", ["", "../../admin", "a?b=c", "%2e%2e", ".hidden", "a b", "x" * 215, "@scope/"]
)
async def test_npm_junk_rejected_without_http(interaction: FakeInteraction, junk: str) -> None:
    cog = Npm(NPM)
    with respx.mock(using="httpx", assert_all_called=False) as mock:
        route = mock.route()
        await cog.npm.callback(cog, interaction, junk)  # type: ignore[arg-type]
    assert not route.called and [s.kind for s in interaction.sent] == ["response"]


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        (httpx.Response(404), "No npm package named `left-pad2`."),
        (
            httpx.Response(429, headers={"Retry-After": "30"}),
            "npm is rate-limiting us; try again in 30 seconds.",
        ),
        (httpx.Response(200, json={"name": "x"}), "could not understand"),
        (httpx.Response(200, text="oops"), "could not understand"),
    ],
)
async def test_npm_failures(interaction: FakeInteraction, response: httpx.Response, expected: str) -> None:
    cog = Npm(NPM)
    with respx.mock(using="httpx") as mock:
        mock.get(f"{NPM}/left-pad2").mock(return_value=response)
        await cog.npm.callback(cog, interaction, "left-pad2")  # type: ignore[arg-type]
    assert expected in (interaction.reply.content or "") and interaction.reply.ephemeral


async def test_crate_success_embed(interaction: FakeInteraction) -> None:
    cog = Crates(CRATES)
    with respx.mock(using="httpx") as mock:
        mock.get(f"{CRATES}/crates/serde").respond(json=CRATE)
        await cog.crate.callback(cog, interaction, "serde")  # type: ignore[arg-type]
    embed = interaction.reply.embed
    assert embed is not None and embed.title == "serde 1.0.210"
    assert {f.name: f.value for f in embed.fields}["Downloads"] == "400,000,000"


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        (httpx.Response(404), "No crate named `nope`."),
        (
            httpx.Response(429, headers={"Retry-After": "1"}),
            "crates.io is rate-limiting us; try again in 1 second.",
        ),
        (httpx.Response(500), "unavailable"),
        (httpx.Response(200, json={"crate": {"name": "nope"}}), "could not understand"),
    ],
)
async def test_crate_failures(interaction: FakeInteraction, response: httpx.Response, expected: str) -> None:
    cog = Crates(CRATES)
    with respx.mock(using="httpx") as mock:
        mock.get(f"{CRATES}/crates/nope").mock(return_value=response)
        await cog.crate.callback(cog, interaction, "nope")  # type: ignore[arg-type]
    assert expected in (interaction.reply.content or "") and interaction.reply.ephemeral


async def test_crate_timeout(interaction: FakeInteraction) -> None:
    cog = Crates(CRATES)
    with respx.mock(using="httpx") as mock:
        mock.get(f"{CRATES}/crates/slow").mock(side_effect=httpx.ReadTimeout("slow"))
        await cog.crate.callback(cog, interaction, "slow")  # type: ignore[arg-type]
    assert "took too long" in (interaction.reply.content or "")


@pytest.mark.parametrize("junk", ["", "../x", "a?b", "1abc", "a\nb", "x" * 65])
async def test_crate_junk_rejected_without_http(interaction: FakeInteraction, junk: str) -> None:
    cog = Crates(CRATES)
    with respx.mock(using="httpx", assert_all_called=False) as mock:
        route = mock.route()
        await cog.crate.callback(cog, interaction, junk)  # type: ignore[arg-type]
    assert not route.called


async def test_crate_fetch_encodes_hostile_name() -> None:
    with respx.mock(using="httpx") as mock:
        route = mock.get(url__startswith=CRATES).respond(json=CRATE)
        await fetch_crate(CRATES, "a/b?c#d")
    assert route.calls.last.request.url.raw_path == b"/api/v1/crates/a%2Fb%3Fc%23d"


async def test_npm_timeout(interaction: FakeInteraction) -> None:
    cog = Npm(NPM)
    with respx.mock(using="httpx") as mock:
        mock.get(f"{NPM}/slow").mock(side_effect=httpx.ReadTimeout("slow"))
        await cog.npm.callback(cog, interaction, "slow")  # type: ignore[arg-type]
    assert "npm took too long" in (interaction.reply.content or "") and interaction.reply.ephemeral
