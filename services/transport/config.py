"""How the shared client's transports are chosen and built from the settings."""

from __future__ import annotations

import ssl
from typing import Any

import certifi
import httpx

from services.config import HTTPSettings
from services.transport.httpx_glue import environment_proxies
from services.transport.pool import FastTransport


def build_ssl_context(settings: HTTPSettings) -> ssl.SSLContext:
    """Build the TLS context once; loading the CA bundle costs milliseconds of blocking CPU."""
    if not settings.verify_tls:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    return ssl.create_default_context(cafile=settings.ca_bundle or certifi.where())


def transport_mode(settings: HTTPSettings) -> str:
    """What HTTP_TRANSPORT resolves to: fast (ours, HTTP/1.1 and HTTP/2) or httpcore."""
    return "fast" if settings.transport == "auto" else settings.transport


def transport_options(settings: HTTPSettings, ssl_context: ssl.SSLContext) -> dict[str, Any]:
    """The `transport=`/`mounts=` keywords for the shared `httpx.AsyncClient` under `settings`.

    Proxies from the environment go through httpx's own (httpcore) proxy transports, as without us.
    """
    mode = transport_mode(settings)
    if mode == "httpcore":
        return {}
    # Contexts of its own, built from the same settings: the client's is shared with httpcore's proxy
    # mounts, which set ALPN on it before each connect of theirs.
    fast = FastTransport(
        ssl_context=build_ssl_context(settings),
        http2_ssl_context=build_ssl_context(settings) if settings.http2 else None,
        max_connections=settings.max_connections,
        max_keepalive_connections=settings.max_keepalive_connections,
        keepalive_expiry=settings.keepalive_expiry,
        max_connections_per_host=settings.max_connections_per_host,
        max_queued_per_host=settings.max_queued_per_host,
        adaptive=settings.adaptive_concurrency,
        http2=settings.http2,
        http2_prior_knowledge=settings.http2_prior_knowledge,
    )
    limits = httpx.Limits(
        max_connections=settings.max_connections,
        max_keepalive_connections=settings.max_keepalive_connections,
        keepalive_expiry=settings.keepalive_expiry,
    )
    mounts: dict[str, httpx.AsyncBaseTransport | None] = {}
    # httpx drops environment proxies once given a transport=, so mount them as it would have.
    proxies = environment_proxies() if settings.trust_env else {}
    if any(proxies.values()):
        for pattern, proxy in proxies.items():
            mounts[pattern] = (
                None
                if proxy is None
                else httpx.AsyncHTTPTransport(
                    proxy=proxy, verify=ssl_context, http2=settings.http2, limits=limits
                )
            )
    return {"transport": fast, "mounts": mounts}
