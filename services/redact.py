"""Keep credentials out of log lines and error messages."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx

REDACTED = "REDACTED"

# Query parameter names that carry credentials on the APIs bots commonly call.
SECRET_PARAM_WORDS = (
    "token",
    "key",
    "secret",
    "password",
    "passwd",
    "pwd",
    "auth",
    "signature",
    "sig",
    "session",
    "credential",
    "code",
)


def is_secret_param(name: str) -> bool:
    """Whether a query parameter's name suggests it holds a credential."""
    lowered = name.lower().replace("-", "_")
    return any(word in lowered for word in SECRET_PARAM_WORDS)


def redact_url(url: httpx.URL | str) -> str:
    """Return `url` without userinfo and with secret-looking query values replaced."""
    text = str(url)
    try:
        parts = urlsplit(text)
    except ValueError:
        return "<unparseable URL>"
    netloc = parts.netloc.rpartition("@")[2]
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode(
            [(name, REDACTED if is_secret_param(name) else value) for name, value in pairs],
            safe="",
        )
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


class LazyRedactedURL:
    """`redact_url(url)` computed only when formatted, so a filtered-out log line costs nothing."""

    __slots__ = ("url",)

    def __init__(self, url: httpx.URL | str) -> None:
        self.url = url

    def __str__(self) -> str:
        return redact_url(self.url)

    def __format__(self, spec: str) -> str:
        return format(redact_url(self.url), spec)
