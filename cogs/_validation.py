"""Input checks run before any HTTP call, and safe building of URLs from user input."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from urllib.parse import quote, unquote, urlsplit

from services.config import SettingsError, env_str

_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"})
_DOT_SEGMENTS = frozenset({".", ".."})
# Servers and proxies split segments on "/" (and "\" on Windows) once %2F is decoded, and Tomcat-style
# servers drop a ";parameter" before normalising, so "..;x" climbs as well as "..".
_SEGMENT_SPLIT = re.compile(r"[/\\]")
_MAX_DECODES = 4
DOT_SEGMENT_REFUSAL = "That can't be looked up: `.` and `..` (in any spelling) aren't names I can ask for."


class InputError(ValueError):
    """User input that cannot be sent upstream; the message is shown to the user."""


def clean(
    value: str,
    *,
    what: str,
    max_length: int,
    pattern: re.Pattern[str] | None = None,
    path: bool = False,
) -> str:
    """Strip `value` and reject it when empty, too long, holding control characters or misshapen.

    With `path`, the value becomes a URL path segment, so a dot segment in any spelling is refused too.
    """
    value = value.strip()
    if not value:
        raise InputError(f"Please give a {what}.")
    if len(value) > max_length:
        raise InputError(f"That {what} is too long (at most {max_length} characters).")
    if any(unicodedata.category(ch) in _UNSAFE_CATEGORIES for ch in value):
        raise InputError(f"That {what} contains control characters.")
    if path and is_dot_segment(value):
        raise InputError(DOT_SEGMENT_REFUSAL)
    if pattern is not None and not pattern.fullmatch(value):
        raise InputError(f"That doesn't look like a valid {what}.")
    return value


def _unfold(value: str) -> str:
    """`value` as the most lenient server could read it: NFKC-normalised and percent-decoded until stable."""
    for _ in range(_MAX_DECODES):
        decoded = unquote(unicodedata.normalize("NFKC", value))
        if decoded == value:
            break
        value = decoded
    return unicodedata.normalize("NFKC", value)


def is_dot_segment(value: str) -> bool:
    """Whether some server could read `value`, or a part of it between slashes, as `.` or `..`.

    RFC 3986 §5.2.4 removes dot segments, and §6.2.2.2 lets a normaliser decode `%2E` first; WHATWG URL
    rules, many proxies and servers also apply NFKC (the full-width U+FF0E) and decode twice.
    """
    for piece in _SEGMENT_SPLIT.split(_unfold(value)):
        bare = "".join(
            ch for ch in piece.partition(";")[0] if unicodedata.category(ch) not in _UNSAFE_CATEGORIES
        )
        if bare.strip() in _DOT_SEGMENTS:
            return True
    return False


def segment(value: str) -> str:
    """Percent-encode one URL path segment; a dot segment in any spelling raises InputError."""
    if is_dot_segment(value):
        raise InputError(DOT_SEGMENT_REFUSAL)
    return quote(value, safe="")


def join_url(base: str, *segments: str) -> str:
    """`base` followed by each segment, encoded; InputError (before any request) for a dot segment."""
    return "/".join([base.rstrip("/"), *(segment(s) for s in segments)])


def page_url(base: str, *segments: str) -> str | None:
    """`join_url` for a link built from upstream names: None instead of an error for a dot segment."""
    try:
        return join_url(base, *segments)
    except InputError:
        return None


def env_url(env: Mapping[str, str], key: str, default: str) -> str:
    """Read an API base URL setting: absolute http(s) with a host, no query; trailing slash removed."""
    value = env_str(env, key, default)
    parts = urlsplit(value)
    if parts.scheme not in {"http", "https"} or not parts.hostname or parts.query or parts.fragment:
        raise SettingsError(key, value, "an absolute http(s) URL without query or fragment")
    return value.rstrip("/")
