"""A seam for watching every request sent (each retry and redirect hop): metrics subscribe here."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import httpx
from loguru import logger

_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True, slots=True)
class RequestEvent:
    """One request that left the client and how it ended: a status, or the error that ended it."""

    method: str
    scheme: str
    host: str
    port: int
    status: int | None
    error_type: str | None
    duration: float


RequestObserver = Callable[[RequestEvent], None]

# Read on the hot path as `if OBSERVERS:`; mutated in place, so importers see every change.
OBSERVERS: list[RequestObserver] = []


def add_observer(observer: RequestObserver) -> None:
    """Call `observer` with a `RequestEvent` for every request sent from now on."""
    if observer not in OBSERVERS:
        OBSERVERS.append(observer)


def remove_observer(observer: RequestObserver) -> None:
    """Stop calling `observer`; a no-op when it isn't registered."""
    if observer in OBSERVERS:
        OBSERVERS.remove(observer)


# (scheme, host, port) per origin text, so a request's address isn't re-read from its URL each time.
_ADDRESSES: dict[str, tuple[str, str, int]] = {}
MAX_ADDRESSES = 1024


def _report(
    request: httpx.Request, status: int | None, error: str | None, duration: float, origin: str | None
) -> None:
    address = _ADDRESSES.get(origin) if origin is not None else None
    if address is None:
        url = request.url
        scheme = url.scheme
        address = (scheme, url.host, url.port or _DEFAULT_PORTS.get(scheme, 0))
        if origin is not None:
            if len(_ADDRESSES) >= MAX_ADDRESSES:
                _ADDRESSES.clear()
            _ADDRESSES[origin] = address
    event = RequestEvent(request.method, *address, status, error, duration)
    for observer in tuple(OBSERVERS):
        try:
            observer(event)
        except Exception as exc:  # a broken observer must never fail a request
            logger.opt(exception=exc).warning("request observer {!r} failed: {}", observer, exc)


def observe_final(response: httpx.Response, duration: float, origin: str | None = None) -> None:
    """Report the answer that ended an attempt; a 4xx/5xx answer's error type is its status code.

    Redirect hops before it were reported on their own: their time is not counted again.
    `origin` (the request's `scheme://host:port`) lets the address be looked up instead of parsed.
    """
    if response.history:
        duration = max(0.0, duration - sum(_elapsed(hop) for hop in response.history))
    status = response.status_code
    _report(response.request, status, str(status) if status >= 400 else None, duration, origin)


def observe_error(
    request: httpx.Request, error: BaseException, duration: float, origin: str | None = None
) -> None:
    """Report a request that ended without an answer, typed by the error's class name."""
    _report(request, None, type(error).__name__, duration, origin)


def observe_hop(hop: httpx.Response) -> None:
    """Report one redirect response that was followed, timed by its own `elapsed`."""
    status = hop.status_code
    _report(hop.request, status, str(status) if status >= 400 else None, _elapsed(hop), None)


def _elapsed(response: httpx.Response) -> float:
    try:
        return response.elapsed.total_seconds()
    except RuntimeError:  # httpx sets `elapsed` once the response is closed
        return 0.0
