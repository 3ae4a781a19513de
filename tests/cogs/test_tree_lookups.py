"""Every lookup cog through the real bot's command tree via the fake Discord; upstreams mocked by respx."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

from bot.bot import UNEXPECTED, Courier
from tests.bot.conftest import courier_session
from tests.bot.fake_discord import FakeDiscord, Recorded, Reply, SentInteraction

# respx only patches httpx: the bot's own aiohttp traffic to the fake Discord is untouched.
UPSTREAMS = {
    "GITHUB_API_URL": "https://api.github.test",
    "PYPI_URL": "https://pypi.test",
    "CRATES_API_URL": "https://crates.test/api/v1",
    "NPM_REGISTRY_URL": "https://npm.test",
    "WIKIPEDIA_API_URL": "https://{lang}.wikipedia.test",
    "XKCD_URL": "https://xkcd.test",
    "OPEN_METEO_GEOCODING_URL": "https://geocoding.test/v1/search",
    "OPEN_METEO_FORECAST_URL": "https://forecast.test/v1/forecast",
    "DICTIONARY_API_URL": "https://dictionary.test/api/v2/entries/en",
}
USER = 500000000000000001

REPO = {
    "full_name": "python/cpython",
    "html_url": "https://github.com/python/cpython",
    "description": "The Python programming language",
    "stargazers_count": 65000,
    "forks_count": 31000,
    "open_issues_count": 9000,
    "language": "Python",
    "license": {"spdx_id": "Python-2.0"},
    "owner": {"login": "python", "avatar_url": "https://avatars.githubusercontent.com/u/1525981"},
}
GH_USER = {
    "login": "octocat",
    "html_url": "https://github.com/octocat",
    "name": "The Octocat",
    "bio": None,
    "public_repos": 8,
    "followers": 20000,
    "avatar_url": "https://avatars.githubusercontent.com/u/583231",
}
PYPI = {
    "info": {
        "name": "requests",
        "version": "2.32.3",
        "summary": "Python HTTP for Humans.",
        "requires_python": ">=3.8",
    },
    "urls": [{"upload_time_iso_8601": "2024-05-29T15:37:49Z"}],
}
CRATE = {
    "crate": {
        "name": "serde",
        "max_stable_version": "1.0.210",
        "description": "A serialization framework",
        "downloads": 300000000,
    }
}
NPM = {
    "name": "@types/node",
    "dist-tags": {"latest": "22.7.4"},
    "versions": {"22.7.4": {"description": "TypeScript definitions for node", "license": "MIT"}},
}
SUMMARY = {
    "title": "Python (programming language)",
    "extract": "Python is a high-level, general-purpose programming language.",
    "content_urls": {"desktop": {"page": "https://en.wikipedia.org/wiki/Python_(programming_language)"}},
}
COMIC = {
    "num": 353,
    "safe_title": "Python",
    "alt": "I wrote 20 short programs in Python yesterday.",
    "img": "https://imgs.xkcd.com/comics/python.png",
}
PLACE = {"results": [{"name": "Berlin", "country": "Germany", "latitude": 52.52, "longitude": 13.41}]}
FORECAST = {
    "current": {"temperature_2m": 21.5, "relative_humidity_2m": 40, "wind_speed_10m": 12.0, "weather_code": 1}
}
DEFINITION = [
    {
        "word": "hello",
        "phonetic": "/hello/",
        "meanings": [{"partOfSpeech": "noun", "definitions": [{"definition": "A greeting."}]}],
    }
]


@dataclass(frozen=True)
class Case:
    """One slash command, what its upstream answers, and what the reply must show."""

    command: str
    options: dict[str, Any]
    upstream: dict[str, Any]  # URL -> JSON body (200)
    title: str
    subcommand: str | None = None
    fields: dict[str, str] = field(default_factory=dict)


SUCCESS = [
    Case("github", {"repository": "python/cpython"}, {"https://api.github.test/repos/python/cpython": REPO},
         "python/cpython", "repo", {"Language": "Python", "License": "Python-2.0"}),
    Case("github", {"name": "octocat"}, {"https://api.github.test/users/octocat": GH_USER},
         "The Octocat (octocat)", "user", {"Public repos": "8"}),
    Case("pypi", {"package": "requests"}, {"https://pypi.test/pypi/requests/json": PYPI},
         "requests 2.32.3", fields={"Requires Python": ">=3.8", "Released": "2024-05-29"}),
    Case("crate", {"name": "serde"}, {"https://crates.test/api/v1/crates/serde": CRATE},
         "serde 1.0.210", fields={"Downloads": "300,000,000"}),
    Case("npm", {"package": "@types/node"}, {"https://npm.test/@types%2Fnode": NPM},
         "@types/node 22.7.4", fields={"License": "MIT"}),
    Case("wiki", {"query": "Python (programming language)"},
         {"https://en.wikipedia.test/api/rest_v1/page/summary/Python_%28programming_language%29": SUMMARY},
         "Python (programming language)"),
    Case("xkcd", {"number": 353}, {"https://xkcd.test/353/info.0.json": COMIC}, "xkcd 353: Python"),
    Case("weather", {"place": "Berlin"},
         {"https://geocoding.test/v1/search": PLACE, "https://forecast.test/v1/forecast": FORECAST},
         "Weather in Berlin, Germany", fields={"Humidity": "40%", "Wind": "12 km/h"}),
    Case("define", {"word": "hello"}, {"https://dictionary.test/api/v2/entries/en/hello": DEFINITION},
         "hello", fields={"noun": "A greeting."}),
]  # fmt: skip


@pytest.fixture
async def courier(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[FakeDiscord, Courier]]:
    """The real bot with every upstream pointed at a `.test` host, logged into a fake Discord."""
    for key, value in UPSTREAMS.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("GITHUB_TOKEN", raising=False)
    async with courier_session(tmp_path) as session:
        assert session[1].failed_extensions == {}
        yield session


async def invoke(fake: FakeDiscord, case: Case | str, **kwargs: Any) -> tuple[SentInteraction, Reply]:
    """Send one slash command through the gateway and wait (bounded) for its first message."""
    if isinstance(case, Case):
        kwargs = {"subcommand": case.subcommand, "options": case.options, **kwargs}
        case = case.command
    sent = await fake.send_interaction(case, user_id=USER, **kwargs)
    return sent, await fake.wait_for_reply(sent)


def flow(fake: FakeDiscord, sent: SentInteraction) -> list[str]:
    """What the bot did for `sent`: defer, response, delete, followup."""

    def name(r: Recorded) -> str:
        if r.path.endswith("/callback"):
            return {4: "response", 5: "defer"}.get(r.body["type"], "callback")
        return {"POST": "followup", "DELETE": "delete", "PATCH": "edit"}.get(r.method, r.method)

    return [name(r) for r in fake.requests_for(sent)]


@pytest.mark.parametrize("case", SUCCESS, ids=lambda c: f"{c.command}-{c.subcommand or ''}")
async def test_tree_lookup_success_is_a_public_embed_after_a_defer(
    courier: tuple[FakeDiscord, Courier], case: Case
) -> None:
    fake, _ = courier
    with respx.mock(using="httpx") as mock:
        routes = [mock.get(url__startswith=url).respond(json=body) for url, body in case.upstream.items()]
        sent, reply = await invoke(fake, case)
    assert all(route.call_count == 1 for route in routes)
    assert flow(fake, sent) == ["defer", "followup"]
    assert reply.kind == "followup" and not reply.ephemeral
    assert reply.embeds[0]["title"] == case.title
    assert case.fields.items() <= reply.fields.items()


async def test_tree_npm_scoped_name_is_one_encoded_segment(courier: tuple[FakeDiscord, Courier]) -> None:
    fake, _ = courier
    with respx.mock(using="httpx") as mock:
        route = mock.get(url__startswith="https://npm.test/").respond(json=NPM)
        await invoke(fake, "npm", options={"package": "@types/node"})
    assert route.calls.last.request.url.raw_path == b"/@types%2Fnode"


NOT_FOUND = [
    ("github", "repo", {"repository": "nobody/nothing"}, "https://api.github.test/repos/nobody/nothing",
     "No GitHub repository named `nobody/nothing`."),
    ("github", "user", {"name": "nobody"}, "https://api.github.test/users/nobody",
     "No GitHub user named `nobody`."),
    ("pypi", None, {"package": "nope"}, "https://pypi.test/pypi/nope/json", "No PyPI package named `nope`."),
    ("crate", None, {"name": "nope"}, "https://crates.test/api/v1/crates/nope", "No crate named `nope`."),
    ("npm", None, {"package": "nope"}, "https://npm.test/nope", "No npm package named `nope`."),
    ("xkcd", None, {"number": 99999}, "https://xkcd.test/99999/info.0.json",
     "There is no xkcd number 99999."),
    ("define", None, {"word": "qwzx"}, "https://dictionary.test/api/v2/entries/en/qwzx",
     "No definition found for `qwzx`."),
]  # fmt: skip


@pytest.mark.parametrize(
    ("command", "subcommand", "options", "url", "message"),
    NOT_FOUND,
    ids=[f"{c}-{s or ''}" for c, s, *_ in NOT_FOUND],
)
async def test_tree_lookup_not_found_is_a_private_followup(
    courier: tuple[FakeDiscord, Courier],
    command: str,
    subcommand: str | None,
    options: dict[str, Any],
    url: str,
    message: str,
) -> None:
    fake, _ = courier
    with respx.mock(using="httpx") as mock:
        mock.get(url).respond(404, json={"message": "Not Found"})
        sent, reply = await invoke(fake, command, subcommand=subcommand, options=options)
    # The public "thinking…" is deleted so the failure can be private.
    assert flow(fake, sent) == ["defer", "delete", "followup"]
    assert reply.content == message
    assert reply.ephemeral and reply.embeds == []


async def test_tree_wiki_falls_back_to_search_then_reports_not_found(
    courier: tuple[FakeDiscord, Courier],
) -> None:
    fake, _ = courier
    with respx.mock(using="httpx") as mock:
        mock.get("https://en.wikipedia.test/api/rest_v1/page/summary/zzqq").respond(404)
        search = mock.get("https://en.wikipedia.test/w/api.php").respond(json={"query": {"search": []}})
        _, reply = await invoke(fake, "wiki", options={"query": "zzqq"})
    assert search.call_count == 1
    assert reply.content == "Wikipedia has no page matching `zzqq`."
    assert reply.ephemeral


async def test_tree_weather_unknown_place(courier: tuple[FakeDiscord, Courier]) -> None:
    fake, _ = courier
    with respx.mock(using="httpx") as mock:
        mock.get(url__startswith="https://geocoding.test/").respond(json={"generationtime_ms": 0.5})
        _, reply = await invoke(fake, "weather", options={"place": "Nowhereville"})
    assert reply.content == "No place found named `Nowhereville`." and reply.ephemeral


async def test_tree_junk_input_is_refused_at_once_without_upstream_calls(
    courier: tuple[FakeDiscord, Courier],
) -> None:
    fake, _ = courier
    with respx.mock(using="httpx", assert_all_called=False) as mock:
        upstream = mock.route()
        sent, reply = await invoke(fake, "github", subcommand="repo", options={"repository": "no-slash"})
    assert not upstream.called
    assert flow(fake, sent) == ["response"]
    assert "owner/name" in (reply.content or "") and reply.ephemeral


async def test_tree_broken_json_upstream_is_a_private_failure(courier: tuple[FakeDiscord, Courier]) -> None:
    fake, _ = courier
    with respx.mock(using="httpx") as mock:
        mock.get("https://crates.test/api/v1/crates/serde").respond(200, text="{not json")
        _, reply = await invoke(fake, "crate", options={"name": "serde"})
    assert reply.content == "crates.io sent an answer we could not understand." and reply.ephemeral


async def test_tree_unexpected_exception_goes_through_the_global_handler(
    courier: tuple[FakeDiscord, Courier], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake, _ = courier

    async def broken(*_: object) -> None:
        raise RuntimeError("internal detail")

    # load_extension gave the bot its own module object: patch that one.
    monkeypatch.setattr(sys.modules["cogs.pypi"], "fetch_package", broken)
    sent, reply = await invoke(fake, "pypi", options={"package": "requests"})
    assert flow(fake, sent) == ["defer", "delete", "followup"]
    assert reply.content == UNEXPECTED and reply.ephemeral
    assert len(fake.replies(sent)) == 1


async def test_tree_cooldown_is_answered_once_privately(courier: tuple[FakeDiscord, Courier]) -> None:
    fake, _ = courier
    with respx.mock(using="httpx") as mock:
        route = mock.get("https://xkcd.test/353/info.0.json").respond(json=COMIC)
        for _ in range(3):
            await invoke(fake, "xkcd", options={"number": 353})
        sent, reply = await invoke(fake, "xkcd", options={"number": 353})
    assert route.call_count == 3
    assert (reply.content or "").startswith("Slow down: try again in") and reply.ephemeral
    assert flow(fake, sent) == ["response"]  # the tree's handler did not answer a second time


async def test_tree_upstream_failure_does_not_reach_discord_as_an_http_error(
    courier: tuple[FakeDiscord, Courier],
) -> None:
    fake, _ = courier
    with respx.mock(using="httpx") as mock:
        mock.get("https://pypi.test/pypi/slow/json").mock(side_effect=httpx.ReadTimeout("slow"))
        _, reply = await invoke(fake, "pypi", options={"package": "slow"})
    assert reply.content == "PyPI took too long to answer; please try again later." and reply.ephemeral
