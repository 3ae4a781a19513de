"""/isup through the real bot's command tree via the fake Discord, against a server on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web

from tests.bot.conftest import courier_session
from tests.bot.fake_discord import FakeDiscord, SentInteraction

ServerFactory = Callable[[dict[str, Callable[[web.Request], Awaitable[web.StreamResponse]]]], Awaitable[str]]
USER = 600000000000000001


async def counting_server(local_server: ServerFactory) -> tuple[str, list[str]]:
    """A 127.0.0.1 server answering 200 and remembering each path it was asked for."""
    seen: list[str] = []

    async def ok(request: web.Request) -> web.Response:
        seen.append(request.path)
        return web.Response(text="ok")

    return await local_server({"/": ok}), seen


def kinds(fake: FakeDiscord, sent: SentInteraction) -> list[str]:
    return [
        {4: "response", 5: "defer"}.get(r.body["type"], "?") if r.path.endswith("/callback") else r.method
        for r in fake.requests_for(sent)
    ]


async def test_tree_isup_refuses_loopback_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, local_server: ServerFactory
) -> None:
    monkeypatch.delenv("ISUP_ALLOW_PRIVATE_ADDRESSES", raising=False)
    monkeypatch.setenv("ISUP_PORTS", "any")  # the local server's port is not a web port
    base, seen = await counting_server(local_server)
    async with courier_session(tmp_path) as (fake, _):
        sent = await fake.send_interaction("isup", options={"url": f"{base}/"}, user_id=USER)
        reply = await fake.wait_for_reply(sent)
    assert reply.content == "I won't check private or local addresses."
    assert reply.ephemeral
    assert kinds(fake, sent) == ["response"]
    assert seen == []


async def test_tree_isup_refuses_localhost_by_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, local_server: ServerFactory
) -> None:
    monkeypatch.delenv("ISUP_ALLOW_PRIVATE_ADDRESSES", raising=False)
    monkeypatch.setenv("ISUP_PORTS", "any")  # the local server's port is not a web port
    base, seen = await counting_server(local_server)
    port = base.rsplit(":", 1)[1]
    async with courier_session(tmp_path) as (fake, _):
        sent = await fake.send_interaction("isup", options={"url": f"http://localhost:{port}/"}, user_id=USER)
        reply = await fake.wait_for_reply(sent)
    assert reply.ephemeral and reply.embeds == []
    assert reply.content == "I won't check private or local addresses."
    assert seen == []


async def test_tree_isup_reports_a_site_that_answers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, local_server: ServerFactory
) -> None:
    monkeypatch.setenv("ISUP_ALLOW_PRIVATE_ADDRESSES", "true")  # the test-only switch
    monkeypatch.setenv("ISUP_PORTS", "any")
    base, seen = await counting_server(local_server)
    async with courier_session(tmp_path) as (fake, _):
        sent = await fake.send_interaction("isup", options={"url": f"{base}/"}, user_id=USER)
        reply = await fake.wait_for_reply(sent)
    assert kinds(fake, sent) == ["defer", "POST"]
    assert not reply.ephemeral
    assert reply.embeds[0]["title"] == "127.0.0.1 is up"
    assert reply.fields["Status"] == "200 OK"
    assert reply.fields["Redirects"] == "0"
    assert seen == ["/"]


async def test_tree_isup_refuses_a_non_web_port_before_any_lookup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ISUP_PORTS", raising=False)
    async with courier_session(tmp_path) as (fake, _):
        sent = await fake.send_interaction("isup", options={"url": "http://example.test:2222/"}, user_id=USER)
        reply = await fake.wait_for_reply(sent)
    assert (reply.content or "").startswith("I only check web ports (80, 443")
    assert reply.ephemeral
    assert kinds(fake, sent) == ["response"]
