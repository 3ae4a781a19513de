"""Fixtures for the bot tests: a fake Discord on 127.0.0.1 and a way to run a client against it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import discord
import pytest

from bot.bot import Courier
from bot.config import BotSettings
from tests.bot.fake_discord import TOKEN, WAIT_TIMEOUT, FakeDiscord

# discord.py waits this long for GUILD_CREATEs after READY; the fake sends none.
GUILD_READY_TIMEOUT = 0.05


@pytest.fixture
async def fake_discord() -> AsyncIterator[FakeDiscord]:
    """A running fake Discord, with discord.py pointed at it for the test."""
    async with FakeDiscord() as fake:
        with fake.patched():
            yield fake


@contextlib.asynccontextmanager
async def connected(client: discord.Client, token: str) -> AsyncIterator[asyncio.Task[None]]:
    """Log `client` in, connect it, wait (bounded) for READY; close it and its task on the way out."""
    client._connection.guild_ready_timeout = GUILD_READY_TIMEOUT
    tasks: list[asyncio.Task[Any]] = []
    try:
        await client.login(token)
        session = asyncio.create_task(client.connect(reconnect=False), name="fake-discord-client")
        ready = asyncio.create_task(client.wait_until_ready())
        tasks += [session, ready]
        done, _ = await asyncio.wait(tasks, timeout=WAIT_TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
        if session in done:
            session.result()  # raise what ended the session before READY
        if ready not in done:
            raise TimeoutError("the client did not become ready")
        yield session
    finally:
        for task in tasks[1:]:
            task.cancel()
        await client.close()
        async with asyncio.timeout(WAIT_TIMEOUT):
            await asyncio.gather(*tasks, return_exceptions=True)
    leftover = {t.get_name() for t in asyncio.all_tasks() if t is not asyncio.current_task()}
    assert not leftover, f"tasks still running after close: {leftover}"


@contextlib.asynccontextmanager
async def courier_session(state_dir: Path, **settings: Any) -> AsyncIterator[tuple[FakeDiscord, Courier]]:
    """The real bot (all cogs, command sync) logged into a fresh fake Discord; closed on the way out."""
    async with FakeDiscord() as fake:
        with fake.patched():
            bot = Courier(BotSettings(token=TOKEN, state_dir=state_dir, shutdown_grace=1.0, **settings))
            async with connected(bot, TOKEN):
                yield fake, bot
