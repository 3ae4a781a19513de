"""A URL's origin as the service keys it: `scheme://host:port`, read once per URL object."""

from __future__ import annotations

import httpx

# The service reuses one parsed URL per URL string (httpx_glue's URL cache), so the origin text is
# kept per URL object (held here, so its id can't be reused while remembered): building it reads three
# httpx properties, about 3k instructions on a path that runs for every attempt.
_ORIGINS_SIZE = 256
_origins: dict[int, tuple[httpx.URL, str]] = {}


def origin_of(url: httpx.URL) -> str:
    """`scheme://host:port`, with the scheme's default port spelled out."""
    known = _origins.get(id(url))
    if known is not None and known[0] is url:
        return known[1]
    scheme = url.scheme
    text = f"{scheme}://{url.host}:{url.port or (443 if scheme == 'https' else 80)}"
    if len(_origins) >= _ORIGINS_SIZE:
        _origins.clear()
    _origins[id(url)] = (url, text)
    return text


def noop() -> None:
    """A release with nothing to release."""
