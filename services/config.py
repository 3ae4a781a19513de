"""Settings of the shared HTTP client, read from the environment and validated once."""

from __future__ import annotations

import contextlib
import math
import os
import re
import socket
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from importlib import metadata
from typing import TypeVar
from urllib.parse import urlsplit

T = TypeVar("T")

TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"0", "false", "no", "off"})

try:
    VERSION = metadata.version("courier")
except metadata.PackageNotFoundError:  # running from a bare checkout
    VERSION = "0.0.0+unknown"

DEFAULT_CONTACT_URL = "https://github.com/courier-bot/courier"
# auto and fast: Courier's own transport (HTTP/1.1, and HTTP/2 when HTTP_HTTP2 is on); httpcore: the
# stock httpx transport for everything.
TRANSPORTS = ("auto", "fast", "httpcore")


class SettingsError(ValueError):
    """A setting has a value that cannot be used; the message names the key and the value."""

    def __init__(self, key: str, value: str | None, expected: str, *, secret: bool = False) -> None:
        shown = "<hidden>" if secret else repr(value)
        super().__init__(f"{key}={shown} is invalid: expected {expected}")
        self.key = key
        self.expected = expected

    @property
    def errors(self) -> tuple[SettingsError, ...]:
        """Each bad setting this error reports."""
        return (self,)


class InvalidSettingsError(SettingsError):
    """Several settings are invalid; the message lists every one of them."""

    def __init__(self, errors: Sequence[SettingsError]) -> None:
        ValueError.__init__(self, f"{len(errors)} settings are invalid: " + "; ".join(map(str, errors)))
        self.key = ", ".join(error.key for error in errors)
        self.expected = "valid values"
        self._errors = tuple(errors)

    @property
    def errors(self) -> tuple[SettingsError, ...]:
        """Each bad setting this error reports."""
        return self._errors


_collected: ContextVar[list[SettingsError] | None] = ContextVar("courier_settings_errors", default=None)


def invalid(error: SettingsError, fallback: T) -> T:
    """Raise `error`; inside `collect_settings_errors()`, note it and go on reading with `fallback`."""
    errors = _collected.get()
    if errors is None:
        raise error
    errors.append(error)
    return fallback


@contextlib.contextmanager
def collect_settings_errors() -> Iterator[None]:
    """Read settings in this block, then raise one SettingsError naming every bad key (outermost block)."""
    if _collected.get() is not None:
        yield  # nested: the outermost block reports
        return
    errors: list[SettingsError] = []
    token = _collected.set(errors)
    try:
        yield
    except SettingsError as exc:  # a check across keys, after every key was read
        errors.extend(exc.errors)
    finally:
        _collected.reset(token)
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise InvalidSettingsError(errors)


def _read(env: Mapping[str, str], key: str) -> str | None:
    """Return the stripped value of `key` without matching surrounding quotes, or None when blank."""
    raw = env.get(key)
    if raw is None:
        return None
    value = raw.strip()
    # `docker run --env-file` passes KEY="x" on with its quotes; in a .env file they mean x.
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        value = value[1:-1].strip()
    return value or None


def env_str(env: Mapping[str, str], key: str, default: str) -> str:
    """Read a string setting."""
    value = _read(env, key)
    return default if value is None else value


def env_choice(env: Mapping[str, str], key: str, default: str, choices: tuple[str, ...]) -> str:
    """Read a setting that must be one of `choices` (case-insensitive)."""
    value = env_str(env, key, default).lower()
    if value not in choices:
        return invalid(SettingsError(key, value, "one of " + ", ".join(choices)), default)
    return value


def env_optional_str(env: Mapping[str, str], key: str) -> str | None:
    """Read a string setting that may be absent."""
    return _read(env, key)


def env_bool(env: Mapping[str, str], key: str, default: bool) -> bool:
    """Read a boolean setting (true/false, yes/no, on/off, 1/0)."""
    value = _read(env, key)
    if value is None:
        return default
    word = value.lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    return invalid(SettingsError(key, value, "true or false"), default)


def _env_number(
    env: Mapping[str, str],
    key: str,
    default: T,
    convert: Callable[[str], T],
    kind: str,
    minimum: float | None,
    maximum: float | None,
) -> T:
    value = _read(env, key)
    if value is None:
        return default
    try:
        number = convert(value)
    except ValueError:
        return invalid(SettingsError(key, value, kind), default)
    as_float = float(number)  # type: ignore[arg-type]
    if not math.isfinite(as_float):
        return invalid(SettingsError(key, value, f"a finite {kind}"), default)
    if minimum is not None and as_float < minimum:
        return invalid(SettingsError(key, value, f"a {kind} of at least {minimum:g}"), default)
    if maximum is not None and as_float > maximum:
        return invalid(SettingsError(key, value, f"a {kind} of at most {maximum:g}"), default)
    return number


def env_int(
    env: Mapping[str, str],
    key: str,
    default: int,
    *,
    minimum: int | None = None,
    maximum: int | None = None,
) -> int:
    """Read a whole-number setting within bounds."""
    return _env_number(env, key, default, int, "whole number", minimum, maximum)


def env_float(
    env: Mapping[str, str],
    key: str,
    default: float,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
) -> float:
    """Read a number setting (seconds, ratios) within bounds."""
    return _env_number(env, key, default, float, "number", minimum, maximum)


_PERIODS = {"s": 1.0, "m": 60.0, "h": 3600.0}
_HOST_RE = re.compile(r"^[a-z0-9.-]+$")


@dataclass(frozen=True, slots=True)
class HostLimit:
    """A per-host budget: `requests` per `period` seconds (0 = unlimited), at most `concurrency` at once."""

    host: str
    requests: int = 0
    period: float = 1.0
    concurrency: int = 0

    def matches(self, host: str) -> bool:
        """Whether `host` is this host or one of its subdomains."""
        return host == self.host or host.endswith("." + self.host)


def env_host_limits(env: Mapping[str, str], key: str, default: str) -> tuple[HostLimit, ...]:
    """Read per-host limits: `host=RATE/UNIT` or `host=RATE/UNIT*CONCURRENCY` or `host=*CONCURRENCY`.

    Entries are separated by commas; UNIT is s, m or h. Example: `crates.io=1/s,api.github.com=*4`.
    """
    try:
        return _host_limits(key, env_str(env, key, default))
    except SettingsError as exc:
        return invalid(exc, _host_limits(key, default))


def _host_limits(key: str, text: str) -> tuple[HostLimit, ...]:
    limits: dict[str, HostLimit] = {}
    expected = "comma-separated host=COUNT/UNIT[*CONCURRENCY] entries (UNIT s, m or h)"
    for entry in filter(None, (part.strip() for part in text.split(","))):
        host, _, spec = entry.partition("=")
        host = host.strip().lower()
        rate, _, concurrency = spec.strip().partition("*")
        count, _, unit = rate.partition("/")
        try:
            requests = int(count) if count else 0
            cap = int(concurrency) if concurrency else 0
        except ValueError:
            raise SettingsError(key, text, expected) from None
        valid = (
            _HOST_RE.match(host)
            and requests >= 0
            and cap >= 0
            and (requests or cap)
            and (unit in _PERIODS if count else not unit)
        )
        if not valid:
            raise SettingsError(key, text, expected)
        limits[host] = HostLimit(host, requests, _PERIODS.get(unit, 1.0), cap)
    return tuple(limits.values())


REDIS_SCHEMES = ("redis", "rediss", "unix")


def default_instance() -> str:
    """How this process is named in the cluster's statistics when COURIER_INSTANCE is unset."""
    return f"{socket.gethostname()}:{os.getpid()}"


DEFAULT_HOST_LIMITS = "crates.io=1/s"
"""crates.io's crawler policy asks for at most one request per second; GitHub's quota is read from
its X-RateLimit headers instead of being guessed here."""


@dataclass(frozen=True, slots=True)
class HTTPSettings:
    """Everything the shared HTTP client can be tuned with; defaults suit a bot calling public APIs."""

    max_connections: int = 100
    max_keepalive_connections: int = 20
    keepalive_expiry: float = 15.0
    connect_timeout: float = 10.0
    read_timeout: float = 30.0
    write_timeout: float = 30.0
    pool_timeout: float = 10.0
    http2: bool = False
    http2_prior_knowledge: bool = False
    follow_redirects: bool = True
    max_redirects: int = 10
    verify_tls: bool = True
    ca_bundle: str | None = None
    trust_env: bool = True
    user_agent: str | None = None
    contact_url: str = DEFAULT_CONTACT_URL
    latency_window: int = 1000
    retries: int = 2
    retry_backoff: float = 0.25
    retry_backoff_max: float = 4.0
    max_wait: float = 5.0
    deadline: float = 30.0
    breaker_threshold: int = 5
    breaker_cooldown: float = 30.0
    host_limits: tuple[HostLimit, ...] = field(
        default_factory=lambda: env_host_limits({}, "HTTP_HOST_LIMITS", DEFAULT_HOST_LIMITS)
    )
    max_response_bytes: int = 5 * 1024 * 1024
    cache: bool = True
    cache_max_entries: int = 512
    cache_max_bytes: int = 32 * 1024 * 1024
    drain_timeout: float = 10.0
    transport: str = "auto"
    max_connections_per_host: int = 0
    max_queued_per_host: int = 0
    adaptive_concurrency: bool = True
    redis_url: str | None = field(default=None, repr=False)  # may hold a password
    redis_prefix: str = "courier:"
    redis_timeout: float = 0.005
    redis_cache_max_entry_bytes: int = 256 * 1024
    redis_cache_max_bytes: int = 64 * 1024 * 1024
    instance: str = field(default_factory=default_instance)

    def __post_init__(self) -> None:
        if self.max_keepalive_connections > self.max_connections:
            raise SettingsError(
                "HTTP_MAX_KEEPALIVE_CONNECTIONS",
                str(self.max_keepalive_connections),
                f"at most HTTP_MAX_CONNECTIONS ({self.max_connections})",
            )
        if self.redis_url is not None and urlsplit(self.redis_url).scheme not in REDIS_SCHEMES:
            raise SettingsError("REDIS_URL", None, "a redis://, rediss:// or unix:// URL", secret=True)
        if self.ca_bundle is not None and not os.path.isfile(self.ca_bundle):
            raise SettingsError("HTTP_CA_BUNDLE", self.ca_bundle, "the path of a readable file")

    @property
    def effective_user_agent(self) -> str:
        """The User-Agent sent with every request: the override, or bot name, version and contact."""
        return self.user_agent or f"Courier/{VERSION} (+{self.contact_url})"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> HTTPSettings:
        """Build settings from `env` (the process environment by default); one error names every bad key."""
        with collect_settings_errors():
            return cls._read_env(os.environ if env is None else env)

    @classmethod
    def _read_env(cls, env: Mapping[str, str]) -> HTTPSettings:
        d = cls()
        max_connections = env_int(env, "HTTP_MAX_CONNECTIONS", d.max_connections, minimum=1)
        return cls(
            max_connections=max_connections,
            max_keepalive_connections=env_int(
                env,
                "HTTP_MAX_KEEPALIVE_CONNECTIONS",
                min(d.max_keepalive_connections, max_connections),
                minimum=0,
            ),
            keepalive_expiry=env_float(
                env, "HTTP_KEEPALIVE_EXPIRY", d.keepalive_expiry, minimum=0, maximum=3600
            ),
            connect_timeout=env_float(
                env, "HTTP_CONNECT_TIMEOUT", d.connect_timeout, minimum=0.001, maximum=600
            ),
            read_timeout=env_float(env, "HTTP_READ_TIMEOUT", d.read_timeout, minimum=0.001, maximum=3600),
            write_timeout=env_float(env, "HTTP_WRITE_TIMEOUT", d.write_timeout, minimum=0.001, maximum=3600),
            pool_timeout=env_float(env, "HTTP_POOL_TIMEOUT", d.pool_timeout, minimum=0.001, maximum=600),
            http2=env_bool(env, "HTTP_HTTP2", d.http2),
            http2_prior_knowledge=env_bool(env, "HTTP_HTTP2_PRIOR_KNOWLEDGE", d.http2_prior_knowledge),
            follow_redirects=env_bool(env, "HTTP_FOLLOW_REDIRECTS", d.follow_redirects),
            max_redirects=env_int(env, "HTTP_MAX_REDIRECTS", d.max_redirects, minimum=0, maximum=50),
            verify_tls=env_bool(env, "HTTP_VERIFY_TLS", d.verify_tls),
            ca_bundle=env_optional_str(env, "HTTP_CA_BUNDLE"),
            trust_env=env_bool(env, "HTTP_TRUST_ENV", d.trust_env),
            user_agent=env_optional_str(env, "HTTP_USER_AGENT"),
            contact_url=env_str(env, "HTTP_CONTACT_URL", d.contact_url),
            latency_window=env_int(env, "HTTP_LATENCY_WINDOW", d.latency_window, minimum=10, maximum=100_000),
            retries=env_int(env, "HTTP_RETRIES", d.retries, minimum=0, maximum=10),
            retry_backoff=env_float(env, "HTTP_RETRY_BACKOFF", d.retry_backoff, minimum=0, maximum=60),
            retry_backoff_max=env_float(
                env, "HTTP_RETRY_BACKOFF_MAX", d.retry_backoff_max, minimum=0, maximum=600
            ),
            max_wait=env_float(env, "HTTP_MAX_WAIT", d.max_wait, minimum=0, maximum=3600),
            deadline=env_float(env, "HTTP_DEADLINE", d.deadline, minimum=0.01, maximum=3600),
            breaker_threshold=env_int(env, "HTTP_BREAKER_THRESHOLD", d.breaker_threshold, minimum=0),
            breaker_cooldown=env_float(
                env, "HTTP_BREAKER_COOLDOWN", d.breaker_cooldown, minimum=0.01, maximum=3600
            ),
            host_limits=env_host_limits(env, "HTTP_HOST_LIMITS", DEFAULT_HOST_LIMITS),
            max_response_bytes=env_int(
                env, "HTTP_MAX_RESPONSE_BYTES", d.max_response_bytes, minimum=1024, maximum=2**40
            ),
            cache=env_bool(env, "HTTP_CACHE", d.cache),
            cache_max_entries=env_int(env, "HTTP_CACHE_MAX_ENTRIES", d.cache_max_entries, minimum=0),
            cache_max_bytes=env_int(env, "HTTP_CACHE_MAX_BYTES", d.cache_max_bytes, minimum=0),
            drain_timeout=env_float(env, "HTTP_DRAIN_TIMEOUT", d.drain_timeout, minimum=0, maximum=600),
            transport=env_choice(env, "HTTP_TRANSPORT", d.transport, TRANSPORTS),
            max_connections_per_host=env_int(
                env, "HTTP_MAX_CONNECTIONS_PER_HOST", d.max_connections_per_host, minimum=0
            ),
            max_queued_per_host=env_int(env, "HTTP_MAX_QUEUED_PER_HOST", d.max_queued_per_host, minimum=0),
            adaptive_concurrency=env_bool(env, "HTTP_ADAPTIVE_CONCURRENCY", d.adaptive_concurrency),
            redis_url=env_optional_str(env, "REDIS_URL"),
            redis_prefix=env_str(env, "COURIER_REDIS_PREFIX", d.redis_prefix),
            redis_timeout=env_float(env, "COURIER_REDIS_TIMEOUT", d.redis_timeout, minimum=0.001, maximum=5),
            redis_cache_max_entry_bytes=env_int(
                env, "COURIER_REDIS_CACHE_MAX_ENTRY_BYTES", d.redis_cache_max_entry_bytes, minimum=0
            ),
            redis_cache_max_bytes=env_int(
                env, "COURIER_REDIS_CACHE_MAX_BYTES", d.redis_cache_max_bytes, minimum=0
            ),
            instance=env_str(env, "COURIER_INSTANCE", d.instance),
        )
