"""Tests for /pypi against a mocked PyPI JSON API."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import respx

from cogs.pypi import PyPI, fetch_package
from tests.cogs.conftest import FakeInteraction

BASE = "https://pypi.test"
PAYLOAD = {
    "info": {
        "name": "requests",
        "version": "2.32.3",
        "summary": "Python HTTP for Humans.",
        "requires_python": ">=3.8",
        "package_url": "https://pypi.org/project/requests/",
        "project_urls": {"Source": "https://github.com/psf/requests", "Bad": "javascript:alert(1)"},
    },
    "urls": [{"filename": "requests-2.32.3.tar.gz", "upload_time_iso_8601": "2024-05-29T15:37:49Z"}],
}


async def run(interaction: FakeInteraction, package: str) -> None:
    cog = PyPI(BASE)
    await cog.pypi.callback(cog, interaction, package)  # type: ignore[arg-type]


@pytest.mark.parametrize("payload", [PAYLOAD])
async def test_pypi_success_embed(interaction: FakeInteraction, payload: dict[str, Any]) -> None:
    with respx.mock(using="httpx") as mock:
        mock.get(f"{BASE}/pypi/requests/json").respond(json=payload)
        await run(interaction, "requests")
    reply = interaction.reply
    assert reply.embed is not None and not reply.ephemeral
    assert reply.embed.title == "requests 2.32.3"
    fields = {f.name: f.value for f in reply.embed.fields}
    assert fields["Requires Python"] == ">=3.8"
    assert fields["Released"] == "2024-05-29"
    assert "javascript" not in fields["Links"]


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        (httpx.Response(404), "No PyPI package named `nope`."),
        (httpx.Response(429, headers={"Retry-After": "720"}), "try again in 12 minutes"),
        (httpx.Response(503), "unavailable"),
        (httpx.Response(200, text="{not json"), "could not understand"),
        (httpx.Response(200, json={"info": {}}), "could not understand"),
        (httpx.Response(200, json=[1, 2]), "could not understand"),
    ],
)
async def test_pypi_failures_are_ephemeral(
    interaction: FakeInteraction, response: httpx.Response, expected: str
) -> None:
    with respx.mock(using="httpx") as mock:
        mock.get(f"{BASE}/pypi/nope/json").mock(return_value=response)
        await run(interaction, "nope")
    assert expected in (interaction.reply.content or "")
    assert interaction.reply.ephemeral
    assert [s.kind for s in interaction.sent] == ["defer", "delete", "followup"]


async def test_pypi_timeout(interaction: FakeInteraction) -> None:
    with respx.mock(using="httpx") as mock:
        mock.get(f"{BASE}/pypi/slow/json").mock(side_effect=httpx.ReadTimeout("slow"))
        await run(interaction, "slow")
    assert "took too long" in (interaction.reply.content or "")


@pytest.mark.parametrize("junk", ["", "   ", "x" * 101, "a\x00b", "../../admin", "a?b=c", "%2e%2e", "-bad"])
async def test_pypi_junk_rejected_without_http(interaction: FakeInteraction, junk: str) -> None:
    with respx.mock(using="httpx", assert_all_called=False) as mock:
        route = mock.route()
        await run(interaction, junk)
    assert not route.called
    assert [s.kind for s in interaction.sent] == ["response"]
    assert interaction.reply.ephemeral


async def test_pypi_fetch_encodes_hostile_names() -> None:
    with respx.mock(using="httpx") as mock:
        route = mock.get(url__startswith=BASE).respond(json=PAYLOAD)
        await fetch_package(BASE, "a/b?c")
    assert route.calls.last.request.url.raw_path == b"/pypi/a%2Fb%3Fc/json"


async def test_pypi_autocomplete_offers_recent_names(interaction: FakeInteraction) -> None:
    cog = PyPI(BASE)
    with respx.mock(using="httpx") as mock:
        mock.get(f"{BASE}/pypi/requests/json").respond(json=PAYLOAD)
        await cog.pypi.callback(cog, interaction, "requests")  # type: ignore[arg-type]
    choices = await cog.pypi_autocomplete(interaction, "req")  # type: ignore[arg-type]
    assert [c.value for c in choices] == ["requests"]


@pytest.mark.parametrize("name", ["x" * 5000, "two words", "-dash", "ok" * 51])
async def test_pypi_recent_names_keep_only_names_a_choice_can_hold(
    interaction: FakeInteraction, name: str
) -> None:
    cog = PyPI(BASE)
    payload = {**PAYLOAD, "info": {**PAYLOAD["info"], "name": name}}  # type: ignore[dict-item]
    with respx.mock(using="httpx") as mock:
        mock.get(f"{BASE}/pypi/requests/json").respond(json=payload)
        await cog.pypi.callback(cog, interaction, "requests")  # type: ignore[arg-type]
    assert interaction.reply.embed is not None and len(interaction.reply.embed.title or "") <= 256
    assert cog.recent == {}
    assert await cog.pypi_autocomplete(interaction, "") == []  # type: ignore[arg-type]


async def test_pypi_hostile_package_url_falls_back_to_the_project_page(interaction: FakeInteraction) -> None:
    payload = {**PAYLOAD, "info": {**PAYLOAD["info"], "package_url": "javascript:alert(1)"}}  # type: ignore[dict-item]
    with respx.mock(using="httpx") as mock:
        mock.get(f"{BASE}/pypi/requests/json").respond(json=payload)
        await run(interaction, "requests")
    assert (
        interaction.reply.embed is not None
        and interaction.reply.embed.url == "https://pypi.org/project/requests"
    )
