"""Cheap header lookups for the service's per-request checks."""

from __future__ import annotations

from collections.abc import Set

import httpx

# Response extension: the lowercased header names, gathered by a transport while it parsed them.
HEADER_NAMES = "courier.header_names"


def header_names(response: httpx.Response) -> Set[bytes]:
    """The response's lowercased header names, so a check for an absent header costs no scan."""
    names: Set[bytes] | None = response.extensions.get(HEADER_NAMES)
    if names is None:
        names = {name.lower() for name, _ in response.headers.raw}  # not from our transport: rare
    return names
