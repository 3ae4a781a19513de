"""Reading the pools behind a client: Courier's own transport reports exactly, httpcore's is read."""

from __future__ import annotations

from typing import Any

import httpx
from loguru import logger

from services.stats import PoolState, ReportsPoolState, merge_pool_states
from services.transport.httpx_glue import client_transports, httpcore_pool, httpcore_pool_state


def _transport_pool_state(transport: Any) -> PoolState | None:
    if isinstance(transport, ReportsPoolState):
        return transport.pool_state()
    pool = httpcore_pool(transport)
    return None if pool is None else httpcore_pool_state(pool)


def read_pool_state(client: httpx.AsyncClient) -> PoolState | None:
    """Merge the pool states of the client's transport and mounts; None when they can't be read."""
    try:
        states = [_transport_pool_state(t) for t in client_transports(client)]
    except Exception as exc:  # a future httpx/httpcore moved its internals
        logger.opt(exception=exc).debug("pool statistics are unavailable: {}", exc)
        return None
    known = [s for s in states if s is not None]
    return merge_pool_states(known) if known else None


def transport_name(client: httpx.AsyncClient | None) -> str:
    """A short name for the kind of transport the client sends through."""
    if client is None:
        return "none"
    return type(client_transports(client)[0]).__name__
