"""The SSRF guard: hostile spellings, names resolving inward, and the peer check on real sockets."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any

import httpcore
import httpx
import pytest
from aiohttp import web

from services.url_guard import (
    ForbiddenAddressError,
    GuardedBackend,
    InvalidTargetError,
    ResolutionError,
    URLGuard,
    forbidden_reason,
    parse_ip_literal,
)
from tests.conftest import ServerFactory

REFUSED_URLS = [
    # loopback in every spelling a resolver or URL parser accepts
    "http://127.0.0.1/",
    "http://0x7f.1/",
    "http://0177.0.0.1/",
    "http://0x7f000001/",
    "http://017700000001/",
    "http://2130706433/",
    "http://127.1/",
    "http://127.0.0.1./",
    "http://127.000.000.001/",
    "http://0/",
    "http://[::1]/",
    "http://[0:0:0:0:0:0:0:1]/",
    "http://[::]/",
    "http://[::ffff:127.0.0.1]/",
    "http://[::ffff:7f00:1]/",
    "http://[::127.0.0.1]/",
    "http://[64:ff9b::127.0.0.1]/",
    "http://[2002:7f00:1::]/",
    "http://[2001:0:4136:e378:8000:63bf:80ff:fffe]/",
    "http://localhost/",
    "http://LOCALHOST./",
    "http://app.localhost:8080/",
    "localhost:6379",
    # private, shared, link-local, multicast, reserved, documentation
    "http://10.0.0.1/",
    "http://172.16.5.4/",
    "http://192.168.1.1/",
    "http://100.64.0.1/",
    "http://169.254.1.1/",
    "http://224.0.0.1/",
    "http://239.255.255.250/",
    "http://0.0.0.0/",
    "http://255.255.255.255/",
    "http://240.0.0.1/",
    "http://192.0.2.1/",
    "http://198.18.0.1/",
    "http://[fe80::1]/",
    "http://[fc00::1]/",
    "http://[fd12:3456::1]/",
    "http://[fec0::1]/",
    "http://[ff02::1]/",
    "http://[2001:db8::1]/",
    "http://[::ffff:10.0.0.1]/",
    "http://[::ffff:192.168.0.1]/",
    # cloud metadata, by address and by name
    "http://169.254.169.254/latest/meta-data/",
    "http://0xa9fea9fe/",
    "http://[::ffff:169.254.169.254]/",
    "http://[64:ff9b::a9fe:a9fe]/",
    "http://[2002:a9fe:a9fe::]/",
    "http://[fd00:ec2::254]/latest/meta-data/",
    "http://100.100.100.200/latest/meta-data/",
    "http://168.63.129.16/",
    "http://metadata.google.internal/computeMetadata/v1/",
    "http://METADATA.google.internal./",
    "http://metadata/",
    "http://db.internal/",
    "http://printer.local/",
    "http://intranet/",
]

JUNK_URLS = [
    "ftp://example.com/",
    "file:///etc/passwd",
    "gopher://example.com:25/",
    "javascript:alert(1)",
    "data:text/html,hi",
    "http://user:pass@example.com/",
    "http://example.com@127.0.0.1/",
    "http://@example.com/",
    "http://example.com\\@127.0.0.1/",
    "http://exa mple.com/",
    "http://exa\x00mple.com/",
    "http://example.com/\r\nX-Injected: 1",
    "http://%31%32%37.0.0.1/",
    "http://1.2.3.4.5/",
    "http://256.0.0.1/",
    "http://0178.0.0.1/",
    "http://1..2/",
    "http://[fe80::1%25eth0]/",
    "http://[::1/",
    "http:///path",
    "http://example.com:0/",
    "http://example.com:99999/",
    "http://a..b/",
    "http://\uff11\uff12\uff17.\uff10.\uff10.\uff11/",  # full-width digits
    "http://" + "a" * 2050 + ".com/",
    "http://" + "a" * 64 + ".com/",
]

PUBLIC_URLS = [
    ("https://example.com/", "example.com"),
    ("example.com", "example.com"),
    ("HTTP://Example.COM./x", "example.com."),
    ("http://93.184.215.14/", "93.184.215.14"),
    ("http://1572395790/", "1572395790"),
    ("http://[2606:4700::1111]/", "2606:4700::1111"),
    ("http://[::ffff:93.184.215.14]/", "::ffff:93.184.215.14"),
    ("https://bücher.example/", "xn--bcher-kva.example"),
]


@pytest.mark.parametrize("url", REFUSED_URLS)
def test_url_guard_refuses_local_targets(url: str) -> None:
    with pytest.raises(ForbiddenAddressError) as info:
        URLGuard().check_url(url)
    assert info.value.user_message == "I won't check private or local addresses."


@pytest.mark.parametrize("url", JUNK_URLS)
def test_url_guard_rejects_junk(url: str) -> None:
    with pytest.raises(InvalidTargetError) as info:
        URLGuard().check_url(url)
    assert info.value.user_message


@pytest.mark.parametrize(("url", "host"), PUBLIC_URLS)
def test_url_guard_allows_public_targets(url: str, host: str) -> None:
    assert URLGuard().check_url(url).raw_host.decode() == host


def test_url_guard_drops_fragment_and_keeps_query() -> None:
    checked = URLGuard().check_url("https://example.com/a?token=x#frag")
    assert str(checked) == "https://example.com/a?token=x"


@pytest.mark.parametrize(
    ("spelling", "address"),
    [
        ("0x7f.1", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("2130706433", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("127.0.1", "127.0.0.1"),
        ("0x7F.0.0.0x1", "127.0.0.1"),
        ("127.0.0.1.", "127.0.0.1"),
        ("[::ffff:127.0.0.1]", "::ffff:127.0.0.1"),
        ("::1", "::1"),
        ("example.com", None),
        ("1e100.net", None),
        ("0x.example", None),
    ],
)
def test_parse_ip_literal_reads_legacy_spellings(spelling: str, address: str | None) -> None:
    expected = None if address is None else ipaddress.ip_address(address)
    assert parse_ip_literal(spelling) == expected


@pytest.mark.parametrize(
    ("address", "refused"),
    [
        ("93.184.215.14", False),
        ("1.1.1.1", False),
        ("2606:4700::1111", False),
        ("2a00:1450:4001::200e", False),
        ("::ffff:93.184.215.14", False),
        ("64:ff9b::5db8:d70e", False),
        ("127.0.0.1", True),
        ("::1", True),
        ("10.255.255.255", True),
        ("100.127.255.254", True),
        ("169.254.169.254", True),
        ("fd00:ec2::254", True),
        ("100.100.100.200", True),
        ("::ffff:10.0.0.1", True),
        ("64:ff9b::a00:1", True),
        ("2002:c0a8:101::1", True),
        ("fe80::1%1", True),
        ("203.0.113.9", True),
        ("255.255.255.255", True),
    ],
)
def test_forbidden_reason_table(address: str, refused: bool) -> None:
    assert (forbidden_reason(ipaddress.ip_address(address)) is not None) is refused


def fake_resolver(answers: dict[str, Sequence[str]], calls: list[str] | None = None) -> Any:
    """A resolver answering from `answers`, failing like getaddrinfo for other names."""

    async def resolve(host: str, port: int) -> Sequence[str]:
        if calls is not None:
            calls.append(host)
        if host not in answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return answers[host]

    return resolve


@pytest.mark.parametrize(
    "answers",
    [
        ["127.0.0.1"],
        ["93.184.215.14", "10.0.0.7"],
        ["2606:4700::1111", "::1"],
        ["::ffff:169.254.169.254"],
        ["fd00:ec2::254"],
        ["100.100.100.200"],
        ["0.0.0.0"],
    ],
)
async def test_url_guard_refuses_names_resolving_inward(answers: list[str]) -> None:
    guard = URLGuard(resolver=fake_resolver({"rebind.example": answers}))
    assert guard.check_url("http://rebind.example/").host == "rebind.example"  # no look-up yet
    with pytest.raises(ForbiddenAddressError):
        await guard.resolve("rebind.example", 80)


async def test_url_guard_resolves_public_names() -> None:
    guard = URLGuard(resolver=fake_resolver({"example.com": ["93.184.215.14", "2606:2800:21f::1"]}))
    found = await guard.resolve("example.com", 443)
    assert found == [ipaddress.ip_address("93.184.215.14"), ipaddress.ip_address("2606:2800:21f::1")]


async def test_url_guard_dns_failure_is_a_resolution_error() -> None:
    guard = URLGuard(resolver=fake_resolver({}))
    with pytest.raises(ResolutionError) as info:
        await guard.resolve("nowhere.example", 80)
    assert "nowhere.example" in info.value.user_message


async def test_url_guard_resolver_garbage_is_a_resolution_error() -> None:
    guard = URLGuard(resolver=fake_resolver({"odd.example": ["not-an-ip"]}))
    with pytest.raises(ResolutionError):
        await guard.resolve("odd.example", 80)


async def test_url_guard_slow_resolver_times_out() -> None:
    async def stuck(host: str, port: int) -> Sequence[str]:
        await asyncio.sleep(30)
        return []

    guard = URLGuard(resolver=stuck, resolve_timeout=0.05)
    with pytest.raises(httpcore.ConnectTimeout):
        await guard.resolve("slow.example", 80)


async def test_url_guard_metadata_stays_refused_when_private_allowed() -> None:
    guard = URLGuard(allow_private=True, resolver=fake_resolver({"meta.example": ["169.254.169.254"]}))
    assert guard.check_url("http://127.0.0.1/").host == "127.0.0.1"
    assert guard.check_url("http://localhost/").host == "localhost"
    for url in ("http://169.254.169.254/", "http://[fd00:ec2::254]/", "http://metadata.google.internal/"):
        with pytest.raises(ForbiddenAddressError):
            guard.check_url(url)
    with pytest.raises(ForbiddenAddressError):
        await guard.resolve("meta.example", 80)


def test_url_guard_allowed_networks_are_narrow() -> None:
    guard = URLGuard(allowed=[ipaddress.ip_network("127.0.0.1/32")])
    assert guard.check_url("http://127.0.0.1:8000/").port == 8000
    with pytest.raises(ForbiddenAddressError):
        guard.check_url("http://127.0.0.2/")
    with pytest.raises(ForbiddenAddressError):
        guard.check_url("http://localhost/")  # the name rule is not lifted by an address allowance


async def test_url_guard_system_resolver_finds_localhost() -> None:
    guard = URLGuard(allow_private=True)
    found = await guard.resolve("localhost", 80)
    assert found and all(ip.is_loopback for ip in found)
    with pytest.raises(ForbiddenAddressError):
        await URLGuard().resolve("localhost", 80)


def test_guarded_transport_pool_uses_the_guarded_backend() -> None:
    transport = URLGuard().transport(http2=True, limits=httpx.Limits(max_connections=3))
    pool = transport._pool
    assert isinstance(pool, httpcore.AsyncConnectionPool)
    assert isinstance(pool._network_backend, GuardedBackend)
    assert pool._max_connections == 3 and pool._http2


async def ok(request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def start_server(host: str, hits: list[str]) -> AsyncIterator[int]:
    async def handler(request: web.Request) -> web.Response:
        hits.append(request.path)
        return web.Response(text="secret")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, 0)
    await site.start()
    try:
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


@pytest.fixture
async def inner_server() -> AsyncIterator[tuple[int, list[str]]]:
    """A server on 127.0.0.2, standing for an internal service; records every path it serves."""
    hits: list[str] = []
    async for port in start_server("127.0.0.2", hits):
        yield port, hits


async def test_guarded_transport_refuses_loopback_by_default(local_server: ServerFactory) -> None:
    base = await local_server({"/": ok})
    port = httpx.URL(base).port
    assert port is not None
    guard = URLGuard(resolver=fake_resolver({"site.example": ["127.0.0.1"]}))
    async with httpx.AsyncClient(transport=guard.transport()) as client:
        for url in (base, f"http://site.example:{port}/", f"http://0x7f.1:{port}/"):
            with pytest.raises(ForbiddenAddressError):
                await client.get(url)


async def test_guarded_transport_allows_loopback_in_test_mode(local_server: ServerFactory) -> None:
    base = await local_server({"/": ok})
    async with httpx.AsyncClient(transport=URLGuard(allow_private=True).transport()) as client:
        response = await client.get(base)
    assert response.status_code == 200 and response.text == "ok"


class WrongPeerBackend(httpcore.AsyncNetworkBackend):
    """Connects somewhere else than asked, as a rebinding resolver or a rogue route would."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.inner = httpcore.AnyIOBackend()
        self.asked: list[str] = []

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        self.asked.append(host)
        return await self.inner.connect_tcp("127.0.0.2", self.port, timeout, local_address, socket_options)

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


async def test_guarded_transport_vets_the_connected_peer(inner_server: tuple[int, list[str]]) -> None:
    port, hits = inner_server
    guard = URLGuard(allowed=[ipaddress.ip_network("127.0.0.1/32")])
    wrong = WrongPeerBackend(port)
    async with httpx.AsyncClient(transport=guard.transport(inner=wrong)) as client:
        with pytest.raises(ForbiddenAddressError) as info:
            await client.get(f"http://127.0.0.1:{port}/admin")
    assert wrong.asked == ["127.0.0.1"]  # the vetted address was asked for...
    assert "127.0.0.2" in str(info.value)  # ...but the socket's real peer was refused
    assert hits == []


async def test_guarded_backend_refuses_unix_sockets() -> None:
    with pytest.raises(ForbiddenAddressError):
        await GuardedBackend(URLGuard()).connect_unix_socket("/var/run/docker.sock")


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://example.com", True),
        ("http://example.com", True),
        ("https://example.com:8443/x", True),
        ("https://example.com:22", False),
        ("http://example.com:6379", False),
        ("https://example.com:80", True),
    ],
)
def test_url_guard_only_checks_allowed_ports(url: str, allowed: bool) -> None:
    guard = URLGuard(ports=frozenset({80, 443, 8443}))
    if allowed:
        guard.check_url(url)
    else:
        with pytest.raises(InvalidTargetError, match="web ports"):
            guard.check_url(url)
