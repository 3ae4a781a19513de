"""Server-side request forgery guard: vet user-supplied URLs and the addresses they really connect to.

A URL is checked three times: its shape and literal address before anything is sent
(`URLGuard.check_url`), every address its name resolves to right before connecting
(`URLGuard.resolve`), and the peer address of the socket actually connected
(`GuardedBackend.connect_tcp`). The last two run inside the httpcore network backend, so every
redirect hop and every new connection goes through them, and a DNS answer that changes between
a look-up and the connection (rebinding) can't slip a private address past the check.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any
from urllib.parse import urlsplit

import certifi
import httpcore
import httpx
from loguru import logger

from services.transport.httpx_glue import replace_httpcore_pool

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], Awaitable[Sequence[str]]]

MAX_URL_LENGTH = 2048
DEFAULT_RESOLVE_TIMEOUT = 5.0
# A name may resolve to many addresses; all are vetted, only the first few are tried.
MAX_CONNECT_ATTEMPTS = 3

_net = ipaddress.ip_network

# Never reachable, whatever the settings say: cloud instance metadata and host agents.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, Oracle, DigitalOcean
        "169.254.170.2",  # AWS ECS task metadata
        "169.254.169.253",  # AWS VPC DNS resolver
        "100.100.100.200",  # Alibaba Cloud
        "168.63.129.16",  # Azure WireServer (a public address only VMs reach)
        "fd00:ec2::254",  # AWS IMDS over IPv6
        "fd00:ec2::253",  # AWS VPC DNS resolver over IPv6
    )
)
METADATA_NAMES = frozenset(
    {"metadata.google.internal", "metadata.goog", "metadata", "instance-data", "instance-data.ec2.internal"}
)

# IANA special-purpose registries (RFC 6890 and successors): none of these is a public web server.
FORBIDDEN_NETWORKS: tuple[tuple[IPNetwork, str], ...] = (
    (_net("0.0.0.0/8"), "this-network"),
    (_net("10.0.0.0/8"), "private"),
    (_net("100.64.0.0/10"), "carrier-grade NAT"),
    (_net("127.0.0.0/8"), "loopback"),
    (_net("169.254.0.0/16"), "link-local"),
    (_net("172.16.0.0/12"), "private"),
    (_net("192.0.0.0/24"), "IETF protocol assignments"),
    (_net("192.0.2.0/24"), "documentation"),
    (_net("192.88.99.0/24"), "6to4 relay anycast"),
    (_net("192.168.0.0/16"), "private"),
    (_net("198.18.0.0/15"), "benchmarking"),
    (_net("198.51.100.0/24"), "documentation"),
    (_net("203.0.113.0/24"), "documentation"),
    (_net("224.0.0.0/4"), "multicast"),
    (_net("240.0.0.0/4"), "reserved"),  # includes 255.255.255.255, limited broadcast
    (_net("::/128"), "unspecified"),
    (_net("::1/128"), "loopback"),
    (_net("::/96"), "IPv4-compatible (deprecated)"),
    (_net("64:ff9b:1::/48"), "local-use NAT64"),
    (_net("100::/64"), "discard-only"),
    (_net("2001::/23"), "IETF protocol assignments"),  # includes Teredo 2001::/32, ORCHID
    (_net("2001:db8::/32"), "documentation"),
    (_net("3fff::/20"), "documentation"),
    (_net("5f00::/16"), "segment routing"),
    (_net("fc00::/7"), "unique-local"),
    (_net("fe80::/10"), "link-local"),
    (_net("fec0::/10"), "site-local"),
    (_net("ff00::/8"), "multicast"),
)
# IPv6 ranges that carry an IPv4 address; the embedded address decides.
_MAPPED = _net("::ffff:0:0/96")
_COMPATIBLE = _net("::/96")
_NAT64 = _net("64:ff9b::/96")
_6TO4 = _net("2002::/16")
_TEREDO = _net("2001::/32")

# Names that never mean a public web site (RFC 6761, RFC 6762, RFC 8375, ICANN's .internal).
LOCAL_SUFFIXES = (".localhost", ".local", ".internal", ".localdomain", ".home.arpa", ".lan", ".intranet")
LOCAL_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})
_NAME_RE = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")
_UNSAFE_URL_CHARS = re.compile(r"[\x00-\x20\x7f\\]")


class GuardError(Exception):
    """A URL the guard won't let through; `str()` is safe to log, `user_message` to show."""

    user_message = "I can't check that address."


class InvalidTargetError(GuardError):
    """The URL is malformed or uses something other than plain http(s) to a host name or address."""

    def __init__(self, user_message: str) -> None:
        super().__init__(user_message)
        self.user_message = user_message


class ForbiddenAddressError(GuardError):
    """The target is (or resolves to) a private, local, reserved or metadata address."""

    user_message = "I won't check private or local addresses."

    def __init__(self, host: str, reason: str) -> None:
        super().__init__(f"{host} is refused: {reason}")
        self.host = host
        self.reason = reason


class ResolutionError(GuardError):
    """The host name has no address (or the look-up failed)."""

    def __init__(self, host: str, detail: str) -> None:
        super().__init__(f"cannot resolve {host}: {detail}")
        self.host = host
        self.user_message = f"`{host}` doesn't resolve to any address."


def embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, compatible, NAT64, 6to4, Teredo), if any."""
    if ip in _MAPPED:
        return ip.ipv4_mapped
    if ip in _COMPATIBLE and int(ip) > 1:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip in _6TO4:
        return ip.sixtofour
    if ip in _TEREDO and ip.teredo is not None:
        return ip.teredo[1]  # the client; the server half is checked by the 2001::/23 rule
    return None


def is_metadata(ip: IPAddress) -> bool:
    """Whether `ip` is a cloud metadata address, spelled directly or embedded in IPv6."""
    if ip in METADATA_ADDRESSES:
        return True
    inner = embedded_ipv4(ip) if isinstance(ip, ipaddress.IPv6Address) else None
    return inner is not None and inner in METADATA_ADDRESSES


def forbidden_reason(ip: IPAddress) -> str | None:
    """Why `ip` must not be connected to, or None when it is a public unicast address."""
    if is_metadata(ip):
        return "cloud metadata"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return forbidden_reason(ip.ipv4_mapped)  # the socket connects to the IPv4 address
        if ip.scope_id:
            return "scoped address"
        inner = embedded_ipv4(ip)
        if inner is not None and (reason := forbidden_reason(inner)) is not None:
            return f"embeds a {reason} IPv4 address"
    for network, reason in FORBIDDEN_NETWORKS:
        if ip.version == network.version and ip in network:
            return reason
    if not ip.is_global:  # backstop: Python's own copy of the IANA registries
        return "not globally routable"
    return None


def _ipv4_number(part: str) -> int | None:
    """One part of a legacy IPv4 spelling as inet_aton reads it: 0x hex, leading-zero octal, decimal."""
    try:
        if part[:2].lower() == "0x":
            return int(part[2:] or "0", 16) if re.fullmatch(r"[0-9a-fA-F]*", part[2:]) else None
        if len(part) > 1 and part.startswith("0"):
            return int(part, 8) if re.fullmatch(r"[0-7]+", part) else None
        return int(part) if part.isascii() and part.isdigit() else None
    except ValueError:
        return None


def _ends_in_number(labels: list[str]) -> bool:
    last = labels[-1]
    return (last.isascii() and last.isdigit()) or bool(re.fullmatch(r"0[xX][0-9a-fA-F]*", last))


def parse_ip_literal(host: str) -> IPAddress | None:
    """The address `host` spells, in any form a resolver accepts (`0x7f.1`, `0177.0.0.1`, `2130706433`).

    Follows the WHATWG URL IPv4 parser: a host whose last label is a number is an address or invalid,
    never a name. Returns None for a host name; raises InvalidTargetError for a malformed address.
    """
    host = host.strip("[]")
    if ":" in host:
        if "%" in host:
            raise InvalidTargetError("IPv6 zone identifiers aren't allowed.")
        try:
            return ipaddress.IPv6Address(host)
        except ValueError:
            raise InvalidTargetError("That isn't a valid IPv6 address.") from None
    labels = host.split(".")
    if len(labels) > 1 and labels[-1] == "":
        labels.pop()  # one trailing dot: a fully qualified name
    if not labels or not _ends_in_number(labels):
        return None
    numbers = [_ipv4_number(label) if label else None for label in labels]
    if len(numbers) > 4 or any(n is None for n in numbers):
        raise InvalidTargetError("That isn't a valid IP address.")
    values = [n for n in numbers if n is not None]
    *head, last = values
    if any(n > 255 for n in head) or last >= 256 ** (5 - len(values)):
        raise InvalidTargetError("That isn't a valid IP address.")
    number = last
    for index, n in enumerate(head):
        number += n << (8 * (3 - index))
    return ipaddress.IPv4Address(number)


def local_name_reason(host: str) -> str | None:
    """Why a host *name* means a local machine (localhost, .internal, single-label), or None."""
    name = host.rstrip(".")
    if name in METADATA_NAMES or name.endswith(".metadata.google.internal"):
        return "cloud metadata"
    if name in LOCAL_NAMES or name.endswith(LOCAL_SUFFIXES):
        return "local name"
    if "." not in name:
        return "single-label name"  # resolved through the search domains of the bot's own network
    return None


async def system_resolver(host: str, port: int) -> list[str]:
    """Every address the system resolver gives for `host` (IPv4 and IPv6, TCP)."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    return [str(info[4][0]) for info in infos]


def _address(text: str) -> IPAddress:
    return ipaddress.ip_address(text)


class URLGuard:
    """Decides which URLs and addresses may be reached; one instance per policy.

    Args:
        allow_private: Let private, loopback and local targets through. For tests only: never in
            production. Metadata addresses and names stay refused.
        allowed: Networks let through even though they are forbidden (a narrower test hook).
        resolver: Turns a host name and port into address strings; the system resolver by default.
        resolve_timeout: Seconds a look-up may take when the caller gives no timeout.
    """

    def __init__(
        self,
        *,
        allow_private: bool = False,
        allowed: Iterable[IPNetwork] = (),
        resolver: Resolver | None = None,
        resolve_timeout: float = DEFAULT_RESOLVE_TIMEOUT,
        ports: frozenset[int] | None = None,
    ) -> None:
        self.allow_private = allow_private
        self.ports = ports
        self.allowed = tuple(allowed)
        self.resolver: Resolver = resolver or system_resolver
        self.resolve_timeout = resolve_timeout

    def __repr__(self) -> str:
        return f"URLGuard(allow_private={self.allow_private}, allowed={[str(n) for n in self.allowed]})"

    def address_reason(self, ip: IPAddress) -> str | None:
        """Why this policy refuses `ip`, or None."""
        reason = forbidden_reason(ip)
        if reason is None or is_metadata(ip):
            return reason
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped  # one policy for both spellings of an IPv4 peer
        if self.allow_private or any(ip.version == n.version and ip in n for n in self.allowed):
            return None
        return reason

    def vet(self, host: str, ip: IPAddress) -> None:
        """Raise ForbiddenAddressError when `ip` (an address of `host`) is refused."""
        reason = self.address_reason(ip)
        if reason is not None:
            raise ForbiddenAddressError(host, f"{ip} is {reason}")

    def vet_name(self, host: str) -> None:
        """Raise ForbiddenAddressError when the host name itself means a local machine."""
        reason = local_name_reason(host)
        if reason is not None and (reason == "cloud metadata" or not self.allow_private):
            raise ForbiddenAddressError(host, reason)

    def check_url(self, url: str | httpx.URL) -> httpx.URL:
        """Parse and vet a URL's shape and literal host without any network call; returns it cleaned.

        Raises InvalidTargetError for junk and ForbiddenAddressError for a refused literal or name.
        """
        text = str(url)
        if len(text) > MAX_URL_LENGTH:
            raise InvalidTargetError(f"That URL is too long (at most {MAX_URL_LENGTH} characters).")
        if _UNSAFE_URL_CHARS.search(text):
            raise InvalidTargetError("That URL contains spaces, backslashes or control characters.")
        if "://" not in text:
            text = f"https://{text}"  # a bare host name, as people type it
        try:
            parsed = httpx.URL(text)
        except (httpx.InvalidURL, ValueError):
            # httpx refuses some spellings (`0177.0.0.1`) that resolvers accept: say why if it's that.
            self._refuse_legacy_literal(text)
            raise InvalidTargetError("That doesn't look like a web address.") from None
        if parsed.scheme not in {"http", "https"}:
            raise InvalidTargetError("Only http:// and https:// addresses can be checked.")
        if parsed.userinfo or "@" in re.split(r"[/?#]", text.split("://", 1)[1], maxsplit=1)[0]:
            raise InvalidTargetError("Addresses with a user name or password can't be checked.")
        host = parsed.raw_host.decode("ascii")  # IDNA-encoded: what the resolver will be asked
        if not host:
            raise InvalidTargetError("That address has no host name.")
        if parsed.port is not None and not 0 < parsed.port < 65536:
            raise InvalidTargetError("That port number isn't valid.")
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        if self.ports is not None and port not in self.ports:
            shown = ", ".join(str(p) for p in sorted(self.ports))
            raise InvalidTargetError(f"I only check web ports ({shown}).")
        ip = parse_ip_literal(host)
        if ip is not None:
            self.vet(host, ip)
        else:
            _check_name_shape(host)
            self.vet_name(host)
        return parsed.copy_with(fragment=None)

    def _refuse_legacy_literal(self, text: str) -> None:
        try:
            host = urlsplit(text).hostname
            ip = parse_ip_literal(host) if host else None
        except (ValueError, GuardError):
            return
        if ip is not None:
            self.vet(host or "", ip)

    async def resolve(self, host: str, port: int, seconds: float | None = None) -> list[IPAddress]:
        """Every address of `host`, all vetted: one refused address refuses the host."""
        ip = parse_ip_literal(host)
        if ip is not None:
            self.vet(host, ip)
            return [ip]
        _check_name_shape(host)
        self.vet_name(host)
        try:
            async with asyncio.timeout(seconds or self.resolve_timeout):
                answers = await self.resolver(host, port)
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"DNS look-up of {host} timed out") from None
        except OSError as exc:  # socket.gaierror
            raise ResolutionError(host, str(exc)) from None
        try:
            addresses = list(dict.fromkeys(_address(a) for a in answers))
        except ValueError:
            raise ResolutionError(host, "the resolver returned something that isn't an address") from None
        if not addresses:
            raise ResolutionError(host, "no addresses")
        for address in addresses:
            self.vet(host, address)
        return addresses

    def vet_peer(self, host: str, stream: httpcore.AsyncNetworkStream) -> None:
        """Vet the address the socket under `stream` is really connected to."""
        sock = stream.get_extra_info("socket")  # asyncio hands out a TransportSocket, not a socket
        getpeername = getattr(sock, "getpeername", None)
        if getpeername is None:
            raise ForbiddenAddressError(host, "peer address unknown")
        peer = getpeername()
        self.vet(host, _address(str(peer[0])))

    def transport(
        self,
        *,
        verify: ssl.SSLContext | None = None,
        http2: bool = False,
        limits: httpx.Limits | None = None,
        inner: httpcore.AsyncNetworkBackend | None = None,
    ) -> GuardedTransport:
        """An httpx transport whose every connection goes through this guard."""
        return GuardedTransport(self, verify=verify, http2=http2, limits=limits, inner=inner)


def _check_name_shape(host: str) -> None:
    """Refuse names that aren't plain DNS names (percent signs, empty labels, overlong)."""
    name = host[:-1] if host.endswith(".") else host
    labels = name.split(".")
    if len(name) > 253 or not all(_NAME_RE.fullmatch(label) for label in labels):
        raise InvalidTargetError("That host name isn't valid.")


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """An httpcore network backend that resolves and vets the host itself, then vets the peer."""

    def __init__(self, guard: URLGuard, inner: httpcore.AsyncNetworkBackend | None = None) -> None:
        self.guard = guard
        self.inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        """Connect to a vetted address of `host`, then refuse the socket if its peer isn't allowed."""
        addresses = await self.guard.resolve(host, port, timeout)
        error: Exception | None = None
        for address in addresses[:MAX_CONNECT_ATTEMPTS]:
            try:
                # An address, not the name: the connection can't re-resolve to something unvetted.
                stream = await self.inner.connect_tcp(
                    str(address), port, timeout, local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = exc
                continue
            try:
                self.guard.vet_peer(host, stream)
            except BaseException:
                await stream.aclose()
                raise
            return stream
        assert error is not None
        raise error

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        """Never: a Unix socket is local by definition."""
        raise ForbiddenAddressError(path, "unix socket")

    async def sleep(self, seconds: float) -> None:
        """Delegate to the wrapped backend."""
        await self.inner.sleep(seconds)


class GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's own transport (exception mapping, HTTP/2) over a pool that uses a `GuardedBackend`."""

    def __init__(
        self,
        guard: URLGuard,
        *,
        verify: ssl.SSLContext | None = None,
        http2: bool = False,
        limits: httpx.Limits | None = None,
        inner: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        limits = limits or httpx.Limits(max_connections=10, max_keepalive_connections=0)
        context = verify or ssl.create_default_context(cafile=certifi.where())
        # trust_env=False: no proxy from the environment on this path (it would connect for us).
        super().__init__(verify=context, http2=http2, limits=limits, trust_env=False)
        # If httpx moved its pool, this raises: refuse to run unguarded rather than fall back silently.
        pool = httpcore.AsyncConnectionPool(
            ssl_context=context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            http1=True,
            http2=http2,
            retries=0,
            network_backend=GuardedBackend(guard, inner),
        )
        replace_httpcore_pool(self, pool)
        logger.debug("guarded transport ready: {}", guard)
