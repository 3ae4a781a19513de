"""Helpers for the shared-state tests: a client into the test's redis-server, and waiting for a condition."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from tests.redis_server import RedisServer


@pytest.fixture
async def redis_admin(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    """A client to look into the test's redis-server."""
    client = redis_server.admin()
    yield client
    await client.aclose()


async def eventually(check: object, seconds: float = 10.0) -> None:
    """Wait until `check()` (sync or async) is true, at most `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        result = check()  # type: ignore[operator]
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"still false after {seconds}s")
        await asyncio.sleep(0.05)
