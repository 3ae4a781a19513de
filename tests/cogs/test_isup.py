"""Tests for /isup against real servers on 127.0.0.1 (and 127.0.0.2 standing for an internal host)."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
from collections.abc import AsyncIterator, Sequence
from typing import Any

import discord
import httpx
import pytest
import trustme
from aiohttp import web
from discord.ext import commands

from cogs.isup import IsUp, IsUpSettings, build_check_embed, check_site, settings
from services.config import SettingsError
from services.url_guard import ForbiddenAddressError, URLGuard
from tests.cogs.conftest import FakeInteraction
from tests.conftest import ServerFactory

LOOPBACK_ONLY = [ipaddress.ip_network("127.0.0.1/32")]
FAST = IsUpSettings(timeout=5.0, max_redirects=5)


async def ok(request: web.Request) -> web.Response:
    return web.Response(text="ok")


def redirect_to(location: str, status: int = 302) -> Any:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(status=status, headers={"Location": location})

    return handler


def port_of(base: str) -> int:
    port = httpx.URL(base).port
    assert port is not None
    return port


def resolver(answers: dict[str, Sequence[str]]) -> Any:
    async def resolve(host: str, port: int) -> Sequence[str]:
        if host not in answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return answers[host]

    return resolve


async def no_lookups(host: str, port: int) -> Sequence[str]:
    raise AssertionError(f"unexpected DNS look-up of {host}")


@pytest.fixture
async def inner_server() -> AsyncIterator[tuple[int, list[str]]]:
    """A server on 127.0.0.2, standing for an internal service; records every path it serves."""
    hits: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        hits.append(request.path)
        return web.Response(text="internal secret")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.2", 0).start()
    yield runner.addresses[0][1], hits
    await runner.cleanup()


@pytest.fixture
async def raw_server() -> AsyncIterator[Any]:
    """Start plain asyncio servers on 127.0.0.1 that run `reply(reader, writer)`; returns the port."""
    servers: list[asyncio.Server] = []
    release = asyncio.Event()

    async def start(reply: Any, ssl_context: ssl.SSLContext | None = None) -> int:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                await reply(reader, writer, release)
            except (ConnectionError, ssl.SSLError):
                pass
            finally:
                writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=ssl_context)
        servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    yield start
    release.set()
    for server in servers:
        server.close()
        await server.wait_closed()


# --- the check itself, end to end over real sockets ---


async def test_isup_check_refuses_loopback_by_default(local_server: ServerFactory) -> None:
    hits: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        hits.append(request.path)
        return web.Response(text="ok")

    base = await local_server({"/": handler})
    guard = URLGuard(resolver=resolver({"site.example": ["127.0.0.1"]}))
    # Straight to the transport, past check_url: the connect-time check must refuse on its own.
    for url in (base, f"http://site.example:{port_of(base)}/"):
        with pytest.raises(ForbiddenAddressError):
            await check_site(httpx.URL(url), guard, FAST)
    assert hits == []


async def test_isup_check_allows_loopback_in_test_mode(local_server: ServerFactory) -> None:
    base = await local_server({"/": ok})
    check = await check_site(httpx.URL(base), URLGuard(allow_private=True), FAST)
    assert check.up and check.status == 200 and check.reason == "OK"
    assert check.redirects == 0 and check.problem is None
    assert check.elapsed >= 0


async def test_isup_check_follows_allowed_redirects(local_server: ServerFactory) -> None:
    base = await local_server(
        {"/start": redirect_to("/middle"), "/middle": redirect_to("/end", 308), "/end": ok}
    )
    guard = URLGuard(allowed=LOOPBACK_ONLY)
    check = await check_site(httpx.URL(f"{base}/start?token=abc"), guard, FAST)
    assert check.status == 200 and check.redirects == 2
    assert check.url.path == "/end"


@pytest.mark.parametrize(
    "target",
    [
        "http://127.0.0.2:{port}/secret",
        "http://inner.example:{port}/secret",
        "http://localhost:{port}/secret",
        "http://[::1]:{port}/secret",
        "http://0x7f.0.0.2:{port}/secret",
        "http://169.254.169.254/latest/meta-data/",
    ],
)
async def test_isup_redirect_to_refused_address_is_refused(
    local_server: ServerFactory, inner_server: tuple[int, list[str]], target: str
) -> None:
    port, hits = inner_server
    base = await local_server({"/": redirect_to(target.format(port=port))})
    # 127.0.0.1 stands for an allowed public site; 127.0.0.2 for an internal service.
    guard = URLGuard(allowed=LOOPBACK_ONLY, resolver=resolver({"inner.example": ["127.0.0.2"]}))
    with pytest.raises(ForbiddenAddressError):
        await check_site(httpx.URL(base), guard, FAST)
    assert hits == []


async def test_isup_check_stops_after_max_redirects(local_server: ServerFactory) -> None:
    base = await local_server({"/loop": redirect_to("/loop")})
    check = await check_site(
        httpx.URL(f"{base}/loop"), URLGuard(allowed=LOOPBACK_ONLY), IsUpSettings(max_redirects=2)
    )
    assert check.status == 302 and check.redirects == 2
    assert check.problem == "Stopped after 2 redirects."


@pytest.mark.parametrize("location", ["ftp://example.com/", "http://user:pw@example.com/", "javascript:x"])
async def test_isup_check_does_not_follow_odd_redirects(local_server: ServerFactory, location: str) -> None:
    base = await local_server({"/": redirect_to(location)})
    check = await check_site(httpx.URL(base), URLGuard(allowed=LOOPBACK_ONLY), FAST)
    assert check.status == 302 and check.redirects == 0
    assert check.problem == "It redirects somewhere I can't follow."


async def test_isup_check_reports_server_errors(local_server: ServerFactory) -> None:
    async def broken(request: web.Request) -> web.Response:
        return web.Response(status=503)

    base = await local_server({"/": broken})
    check = await check_site(httpx.URL(base), URLGuard(allow_private=True), FAST)
    assert check.status == 503 and not check.up
    assert build_check_embed(check).title == "127.0.0.1 answers with a server error"


async def test_isup_check_reads_no_body(raw_server: Any) -> None:
    written: list[int] = []

    async def endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, release: Any) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (2000 * 65536))
        for _ in range(2000):  # 125 MiB, far more than socket buffers hold
            writer.write(b"x" * 65536)
            await writer.drain()
            written.append(1)

    port = await raw_server(endless)
    check = await check_site(httpx.URL(f"http://127.0.0.1:{port}/"), URLGuard(allow_private=True), FAST)
    assert check.status == 200
    await asyncio.sleep(0.05)  # let the server notice the closed connection
    assert len(written) < 2000


async def test_isup_check_timeout(raw_server: Any) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, release: Any) -> None:
        await asyncio.wait_for(release.wait(), 10)

    port = await raw_server(silent)
    url = httpx.URL(f"http://127.0.0.1:{port}/")
    check = await check_site(url, URLGuard(allow_private=True), IsUpSettings(timeout=0.3))
    assert check.status is None and check.problem == "No answer within 0.3 s."


async def test_isup_check_connection_refused() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    check = await check_site(httpx.URL(f"http://127.0.0.1:{port}/"), URLGuard(allow_private=True), FAST)
    assert check.status is None and check.problem == "It refused the connection."
    assert build_check_embed(check).title == "127.0.0.1 is down"


async def test_isup_check_tls_handshake_failure(local_server: ServerFactory) -> None:
    base = await local_server({"/": ok})
    url = httpx.URL(base).copy_with(scheme="https")  # TLS to a plain-HTTP server
    check = await check_site(url, URLGuard(allow_private=True), FAST)
    assert check.status is None and check.problem == "The TLS handshake failed."


async def test_isup_check_untrusted_certificate(raw_server: Any) -> None:
    authority = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(context)

    async def reply(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, release: Any) -> None:
        await reader.read(1024)

    port = await raw_server(reply, context)
    check = await check_site(httpx.URL(f"https://127.0.0.1:{port}/"), URLGuard(allow_private=True), FAST)
    assert check.status is None and check.problem == "Its TLS certificate isn't valid."


async def test_isup_check_not_http(raw_server: Any) -> None:
    async def junk(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, release: Any) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")
        await writer.drain()

    port = await raw_server(junk)
    check = await check_site(httpx.URL(f"http://127.0.0.1:{port}/"), URLGuard(allow_private=True), FAST)
    assert check.status is None and check.problem == "It answered with something that isn't valid HTTP."


async def test_isup_check_dns_failure() -> None:
    check = await check_site(httpx.URL("https://nowhere.example/"), URLGuard(resolver=resolver({})), FAST)
    assert check.status is None and check.problem == "Its name doesn't resolve to any address."


# --- the command, through its callback ---


async def run(interaction: FakeInteraction, url: str, cog: IsUp) -> None:
    await cog.isup.callback(cog, interaction, url)  # type: ignore[arg-type]


async def test_isup_command_success(local_server: ServerFactory, interaction: FakeInteraction) -> None:
    base = await local_server({"/": redirect_to("/home?token=s3cr3t"), "/home": ok})
    await run(interaction, f"{base}/", IsUp(IsUpSettings(allow_private=True)))
    assert [s.kind for s in interaction.sent] == ["defer", "followup"]
    embed = interaction.reply.embed
    assert embed is not None and not interaction.reply.ephemeral
    assert embed.title == "127.0.0.1 is up"
    fields = {f.name: f.value for f in embed.fields}
    assert fields["Status"] == "200 OK" and fields["Redirects"] == "1"
    assert fields["Response time"].endswith(" ms")
    assert "s3cr3t" not in str(embed.to_dict()) and "token=REDACTED" in fields["Final URL"]


async def test_isup_command_refuses_local_targets_without_network(
    local_server: ServerFactory, interaction: FakeInteraction
) -> None:
    hits: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        hits.append(request.path)
        return web.Response(text="ok")

    base = await local_server({"/": handler})
    await run(interaction, base, IsUp(FAST, URLGuard(resolver=no_lookups)))
    assert [s.kind for s in interaction.sent] == ["response"]
    assert interaction.reply.ephemeral
    assert interaction.reply.content == "I won't check private or local addresses."
    assert hits == []


async def test_isup_command_refuses_redirect_inward(
    local_server: ServerFactory, inner_server: tuple[int, list[str]], interaction: FakeInteraction
) -> None:
    port, hits = inner_server
    base = await local_server({"/": redirect_to(f"http://127.0.0.2:{port}/admin")})
    await run(interaction, base, IsUp(FAST, URLGuard(allowed=LOOPBACK_ONLY)))
    assert [s.kind for s in interaction.sent] == ["defer", "delete", "followup"]
    assert interaction.reply.ephemeral
    assert "private or local address" in (interaction.reply.content or "")
    assert hits == []


@pytest.mark.parametrize(
    "junk",
    [
        "",
        "   ",
        "ftp://example.com/",
        "javascript:alert(1)",
        "http://user:pw@example.com/",
        "http://exa\u200bmple.com/",
        "http://example.com/\x00",
        "https://" + "a" * 3000 + ".com",
        "http://%6c%6f%63%61%6c%68%6f%73%74/",
    ],
)
async def test_isup_command_rejects_junk_without_network(interaction: FakeInteraction, junk: str) -> None:
    await run(interaction, junk, IsUp(FAST, URLGuard(resolver=no_lookups)))
    assert [s.kind for s in interaction.sent] == ["response"]
    assert interaction.reply.ephemeral and interaction.reply.content


async def test_isup_command_reports_down_sites(interaction: FakeInteraction) -> None:
    guard = URLGuard(resolver=resolver({}))
    await run(interaction, "https://nowhere.example/", IsUp(FAST, guard))
    embed = interaction.reply.embed
    assert embed is not None and embed.title == "nowhere.example is down"
    assert embed.description == "Its name doesn't resolve to any address."


# --- settings and loading ---


def test_isup_settings_defaults_and_overrides() -> None:
    web_ports = frozenset({80, 443, 8000, 8080, 8443})
    assert settings({}) == IsUpSettings(timeout=5.0, max_redirects=5, allow_private=False, ports=web_ports)
    env = {
        "ISUP_TIMEOUT": "2.5",
        "ISUP_MAX_REDIRECTS": "0",
        "ISUP_ALLOW_PRIVATE_ADDRESSES": "true",
        "ISUP_PORTS": "any",
    }
    assert settings(env) == IsUpSettings(timeout=2.5, max_redirects=0, allow_private=True, ports=None)
    assert settings({"ISUP_PORTS": "443, 8443"}).ports == {443, 8443}


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("ISUP_TIMEOUT", "0"),
        ("ISUP_TIMEOUT", "120"),
        ("ISUP_MAX_REDIRECTS", "50"),
        ("ISUP_ALLOW_PRIVATE_ADDRESSES", "maybe"),
        ("ISUP_PORTS", "http"),
        ("ISUP_PORTS", "0,443"),
        ("ISUP_PORTS", ","),
    ],
)
async def test_isup_setup_refuses_bad_settings(monkeypatch: pytest.MonkeyPatch, key: str, value: str) -> None:
    monkeypatch.setenv(key, value)
    bot = commands.Bot(command_prefix="!", intents=discord.Intents.none())
    with pytest.raises(commands.ExtensionFailed) as info:
        await bot.load_extension("cogs.isup")
    assert isinstance(info.value.original, SettingsError) and key in str(info.value.original)


async def test_isup_setup_registers_the_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ISUP_ALLOW_PRIVATE_ADDRESSES", raising=False)
    bot = commands.Bot(command_prefix="!", intents=discord.Intents.none())
    await bot.load_extension("cogs.isup")
    cog = bot.get_cog("IsUp")
    assert cog is not None and cog.guard.allow_private is False  # type: ignore[attr-defined]
    assert bot.tree.get_command("isup") is not None
