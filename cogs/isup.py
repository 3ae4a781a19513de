"""/isup: whether a website answers, with its status and response time, never reaching our own network."""

from __future__ import annotations

import asyncio
import errno
import http
import os
import ssl
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import discord
import httpx
from discord import app_commands
from discord.ext import commands
from loguru import logger

from cogs._embeds import make_embed
from cogs._replies import fail, on_cooldown, reject
from cogs._validation import InputError, clean
from services.config import SettingsError, env_bool, env_float, env_int, env_str
from services.http_client import http_client
from services.redact import redact_url
from services.url_guard import (
    MAX_URL_LENGTH,
    ForbiddenAddressError,
    GuardError,
    InvalidTargetError,
    ResolutionError,
    URLGuard,
)

DEFAULT_TIMEOUT = 5.0
# Web ports only: a bot that probes any port of any host is a port scanner for hire.
DEFAULT_PORTS = "80,443,8000,8080,8443"
DEFAULT_MAX_REDIRECTS = 5
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
UP_COLOUR = 0x2ECC71
ERROR_COLOUR = 0xE67E22
DOWN_COLOUR = 0xE74C3C
UNFOLLOWABLE = "It redirects somewhere I can't follow."


@dataclass(frozen=True, slots=True)
class IsUpSettings:
    """How /isup checks a site."""

    timeout: float = DEFAULT_TIMEOUT
    max_redirects: int = DEFAULT_MAX_REDIRECTS
    allow_private: bool = False  # tests only: lets /isup reach loopback and private addresses
    ports: frozenset[int] | None = None  # None: any port


@dataclass(frozen=True, slots=True)
class SiteCheck:
    """What one check found: the last answer's status, or the problem that stopped it."""

    url: httpx.URL
    redirects: int
    elapsed: float
    status: int | None = None
    reason: str = ""
    problem: str | None = None

    @property
    def up(self) -> bool:
        """Whether the site answered without a server error."""
        return self.status is not None and self.status < 500


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """`exc`, its causes and contexts, and the members of exception groups among them (bounded)."""
    pending, seen = [exc], set[int]()
    while pending and len(seen) < 32:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        if isinstance(current, BaseExceptionGroup):
            pending.extend(current.exceptions)
        pending.extend(e for e in (current.__cause__, current.__context__) if e is not None)


def describe_failure(exc: BaseException) -> str:
    """A sentence saying why a site gave no HTTP answer."""
    causes = list(_causes(exc))
    if any(isinstance(e, ssl.SSLCertVerificationError) for e in causes):
        return "Its TLS certificate isn't valid."
    if any(isinstance(e, ssl.SSLError) for e in causes):
        return "The TLS handshake failed."
    if any(isinstance(e, ConnectionRefusedError) for e in causes):
        return "It refused the connection."
    if any(isinstance(e, ConnectionResetError) for e in causes):
        return "It reset the connection."
    unreachable = {errno.EHOSTUNREACH, errno.ENETUNREACH}
    if any(isinstance(e, OSError) and e.errno in unreachable for e in causes):
        return "It can't be reached from here."
    if isinstance(exc, httpx.RemoteProtocolError | httpx.DecodingError):
        return "It answered with something that isn't valid HTTP."
    return "It couldn't be reached."


def reason_of(response: httpx.Response) -> str:
    """The standard reason phrase for the status, or the server's own, made safe to display."""
    try:
        return http.HTTPStatus(response.status_code).phrase
    except ValueError:
        return discord.utils.escape_markdown(response.reason_phrase.strip()[:64])


async def check_site(url: httpx.URL, guard: URLGuard, settings: IsUpSettings) -> SiteCheck:
    """GET `url` through `guard`, following redirects by hand and reading no body.

    Every hop is re-vetted (`guard.check_url`, then the guarded transport at connect time);
    `ForbiddenAddressError` propagates, every other failure becomes a `SiteCheck` with a problem.
    """
    timeout, max_redirects = settings.timeout, settings.max_redirects
    options = http_client.client_options()
    # Limits and HTTP/2 go on the transport: httpx ignores them on a client given a transport.
    transport = guard.transport(verify=options["verify"], http2=options["http2"], limits=options["limits"])
    started = time.perf_counter()
    current, redirects = url, 0

    def found(status: int | None = None, reason: str = "", problem: str | None = None) -> SiteCheck:
        return SiteCheck(current, redirects, time.perf_counter() - started, status, reason, problem)

    answers: list[httpx.Response] = []

    async def remember(response: httpx.Response) -> None:
        answers.append(response)

    try:
        async with (
            asyncio.timeout(timeout),
            http_client.isolated(
                transport=transport,
                follow_redirects=False,
                trust_env=False,
                timeout=httpx.Timeout(timeout),
                event_hooks={"response": [remember]},
            ) as client,
        ):
            while True:
                answers.clear()
                try:
                    # Leaving the block closes the response unread: only the status and headers count.
                    async with client.stream("GET", current) as response:
                        location = response.headers.get("location")
                except httpx.InvalidURL:
                    # httpx parses Location even when not following it; a malformed one raises here.
                    if not answers:
                        raise
                    return found(answers[-1].status_code, reason_of(answers[-1]), UNFOLLOWABLE)
                status, reason = response.status_code, reason_of(response)
                logger.debug("isup {} -> {}", redact_url(current), status)
                if status not in REDIRECT_STATUSES or not location:
                    return found(status, reason)
                if redirects >= max_redirects:
                    return found(status, reason, f"Stopped after {redirects} redirects.")
                try:
                    target = guard.check_url(current.join(location))
                except (InvalidTargetError, httpx.InvalidURL, ValueError):
                    return found(status, reason, UNFOLLOWABLE)
                current, redirects = target, redirects + 1
    except (TimeoutError, httpx.TimeoutException):
        return found(problem=f"No answer within {timeout:g} s.")
    except ResolutionError:
        return found(problem="Its name doesn't resolve to any address.")
    except httpx.HTTPError as exc:
        logger.debug("isup {} failed: {!r}", redact_url(current), exc)
        return found(problem=describe_failure(exc))


def build_check_embed(check: SiteCheck) -> discord.Embed:
    """Shape a SiteCheck into an embed."""
    host = discord.utils.escape_markdown(check.url.host)
    if check.status is None:
        title, colour = f"{host} is down", DOWN_COLOUR
    elif check.up:
        title, colour = f"{host} is up", UP_COLOUR
    else:
        title, colour = f"{host} answers with a server error", ERROR_COLOUR
    fields = []
    if check.status is not None:
        fields.append(("Status", f"{check.status} {check.reason}".strip()))
    fields.append(("Response time", f"{check.elapsed * 1000:.0f} ms"))
    fields.append(("Redirects", str(check.redirects)))
    # Backticks keep Discord markdown in a hostile URL from rendering; the URL itself is redacted.
    fields.append(("Final URL", f"`{redact_url(check.url).replace('`', '%60')}`"))
    return make_embed(
        title=title,
        description=check.problem or "",
        fields=fields,
        footer="isup",
        colour=colour,
    )


class IsUp(commands.Cog):
    """Website availability checks."""

    def __init__(self, settings: IsUpSettings, guard: URLGuard | None = None) -> None:
        self.settings = settings
        self.guard = guard or URLGuard(
            allow_private=settings.allow_private, resolve_timeout=settings.timeout, ports=settings.ports
        )

    @app_commands.command()
    @app_commands.describe(url="The website's address, e.g. https://example.com")
    @app_commands.checks.cooldown(3, 30.0, key=lambda i: i.user.id)
    async def isup(self, interaction: discord.Interaction, url: str) -> None:
        """Check whether a website answers, with its status code and response time."""
        try:
            target = self.guard.check_url(clean(url, what="URL", max_length=MAX_URL_LENGTH))
        except InputError as exc:
            await reject(interaction, str(exc))
            return
        except GuardError as exc:
            logger.info("isup refused {}: {}", redact_url(url), exc)
            await reject(interaction, exc.user_message)
            return
        await interaction.response.defer(thinking=True)
        try:
            check = await check_site(target, self.guard, self.settings)
        except GuardError as exc:
            logger.info("isup refused {}: {}", redact_url(target), exc)
            message = exc.user_message
            if isinstance(exc, ForbiddenAddressError):
                message = f"`{exc.host}` leads to a private or local address; I won't check those."
            await fail(interaction, message)
            return
        logger.info(
            "isup {} -> {} in {:.0f} ms after {} redirect(s)",
            redact_url(check.url),
            check.status if check.status is not None else check.problem,
            check.elapsed * 1000,
            check.redirects,
        )
        await interaction.followup.send(embed=build_check_embed(check))

    async def cog_app_command_error(
        self, interaction: discord.Interaction, error: app_commands.AppCommandError
    ) -> None:
        """Answer cooldowns privately."""
        await on_cooldown(interaction, error)


def settings(env: Mapping[str, str] | None = None) -> IsUpSettings:
    """ISUP_TIMEOUT, ISUP_MAX_REDIRECTS, ISUP_ALLOW_PRIVATE_ADDRESSES and ISUP_PORTS, validated."""
    env = os.environ if env is None else env
    return IsUpSettings(
        timeout=env_float(env, "ISUP_TIMEOUT", DEFAULT_TIMEOUT, minimum=0.5, maximum=30),
        max_redirects=env_int(env, "ISUP_MAX_REDIRECTS", DEFAULT_MAX_REDIRECTS, minimum=0, maximum=10),
        allow_private=env_bool(env, "ISUP_ALLOW_PRIVATE_ADDRESSES", False),
        ports=env_ports(env, "ISUP_PORTS", DEFAULT_PORTS),
    )


def env_ports(env: Mapping[str, str], key: str, default: str) -> frozenset[int] | None:
    """Read the ports /isup may check: a comma-separated list, or `any`."""
    value = env_str(env, key, default)
    if value.lower() == "any":
        return None
    try:
        ports = frozenset(int(part) for part in value.replace(" ", "").split(",") if part)
    except ValueError:
        raise SettingsError(key, value, "comma-separated port numbers, or any") from None
    if not ports or not all(0 < port < 65536 for port in ports):
        raise SettingsError(key, value, "comma-separated port numbers, or any")
    return ports


async def setup(bot: commands.Bot) -> None:
    """Load the isup cog."""
    config = settings()
    if config.allow_private:
        logger.warning("ISUP_ALLOW_PRIVATE_ADDRESSES is on: /isup can reach private addresses (tests only)")
    await bot.add_cog(IsUp(config))
