"""Input checks run before any HTTP call, and safe building of URLs from user input."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from urllib.parse import quote, urlsplit

from services.config import SettingsError, env_str

_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"})


class InputError(ValueError):
    """User input that cannot be sent upstream; the message is shown to the user."""


def clean(value: str, *, what: str, max_length: int, pattern: re.Pattern[str] | None = None) -> str:
    """Strip `value` and reject it when empty, too long, holding control characters or misshapen."""
    value = value.strip()
    if not value:
        raise InputError(f"Please give a {what}.")
    if len(value) > max_length:
        raise InputError(f"That {what} is too long (at most {max_length} characters).")
    if any(unicodedata.category(ch) in _UNSAFE_CATEGORIES for ch in value):
        raise InputError(f"That {what} contains control characters.")
    if pattern is not None and not pattern.fullmatch(value):
        raise InputError(f"That doesn't look like a valid {what}.")
    return value


def segment(value: str) -> str:
    """Percent-encode one URL path segment so it can never add a segment, query or dot-segment."""
    encoded = quote(value, safe="")
    if encoded in {".", ".."}:
        encoded = encoded.replace(".", "%2E")
    return encoded


def join_url(base: str, *segments: str) -> str:
    """`base` followed by each user-supplied segment, encoded."""
    return "/".join([base.rstrip("/"), *(segment(s) for s in segments)])


def env_url(env: Mapping[str, str], key: str, default: str) -> str:
    """Read an API base URL setting: absolute http(s) with a host, no query; trailing slash removed."""
    value = env_str(env, key, default)
    parts = urlsplit(value)
    if parts.scheme not in {"http", "https"} or not parts.hostname or parts.query or parts.fragment:
        raise SettingsError(key, value, "an absolute http(s) URL without query or fragment")
    return value.rstrip("/")
