"""Settings of the shared HTTP client, read from the environment and validated once."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import metadata
from typing import TypeVar

T = TypeVar("T")

TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"0", "false", "no", "off"})

try:
    VERSION = metadata.version("courier")
except metadata.PackageNotFoundError:  # running from a bare checkout
    VERSION = "0.0.0+unknown"

DEFAULT_CONTACT_URL = "https://github.com/courier-bot/courier"


class SettingsError(ValueError):
    """A setting has a value that cannot be used; the message names the key and the value."""

    def __init__(self, key: str, value: str | None, expected: str, *, secret: bool = False) -> None:
        shown = "<hidden>" if secret else repr(value)
        super().__init__(f"{key}={shown} is invalid: expected {expected}")
        self.key = key
        self.expected = expected


def _read(env: Mapping[str, str], key: str) -> str | None:
    """Return the stripped value of `key`, or None when it is unset or blank."""
    raw = env.get(key)
    if raw is None or not raw.strip():
        return None
    return raw.strip()


def env_str(env: Mapping[str, str], key: str, default: str) -> str:
    """Read a string setting."""
    value = _read(env, key)
    return default if value is None else value


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
    raise SettingsError(key, value, "true or false")


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
        raise SettingsError(key, value, kind) from None
    as_float = float(number)  # type: ignore[arg-type]
    if not math.isfinite(as_float):
        raise SettingsError(key, value, f"a finite {kind}")
    if minimum is not None and as_float < minimum:
        raise SettingsError(key, value, f"a {kind} of at least {minimum:g}")
    if maximum is not None and as_float > maximum:
        raise SettingsError(key, value, f"a {kind} of at most {maximum:g}")
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
    http2: bool = True
    follow_redirects: bool = True
    max_redirects: int = 10
    verify_tls: bool = True
    ca_bundle: str | None = None
    trust_env: bool = True
    user_agent: str | None = None
    contact_url: str = DEFAULT_CONTACT_URL
    latency_window: int = 1000

    def __post_init__(self) -> None:
        if self.max_keepalive_connections > self.max_connections:
            raise SettingsError(
                "HTTP_MAX_KEEPALIVE_CONNECTIONS",
                str(self.max_keepalive_connections),
                f"at most HTTP_MAX_CONNECTIONS ({self.max_connections})",
            )
        if self.ca_bundle is not None and not os.path.isfile(self.ca_bundle):
            raise SettingsError("HTTP_CA_BUNDLE", self.ca_bundle, "the path of a readable file")

    @property
    def effective_user_agent(self) -> str:
        """The User-Agent sent with every request: the override, or bot name, version and contact."""
        return self.user_agent or f"Courier/{VERSION} (+{self.contact_url})"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> HTTPSettings:
        """Build settings from `env` (the process environment by default), validating every key."""
        env = os.environ if env is None else env
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
            follow_redirects=env_bool(env, "HTTP_FOLLOW_REDIRECTS", d.follow_redirects),
            max_redirects=env_int(env, "HTTP_MAX_REDIRECTS", d.max_redirects, minimum=0, maximum=50),
            verify_tls=env_bool(env, "HTTP_VERIFY_TLS", d.verify_tls),
            ca_bundle=env_optional_str(env, "HTTP_CA_BUNDLE"),
            trust_env=env_bool(env, "HTTP_TRUST_ENV", d.trust_env),
            user_agent=env_optional_str(env, "HTTP_USER_AGENT"),
            contact_url=env_str(env, "HTTP_CONTACT_URL", d.contact_url),
            latency_window=env_int(env, "HTTP_LATENCY_WINDOW", d.latency_window, minimum=10, maximum=100_000),
        )
