"""`python -m bot`'s entry point in a child process against the fake Discord: exit codes and SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web

from tests.bot.fake_discord import TOKEN, FakeDiscord
from tests.conftest import ServerFactory

ROOT = Path(__file__).resolve().parents[2]
# Child start-up imports discord.py, httpx and every cog: generous on a busy 2-core machine.
PROCESS_TIMEOUT = 20.0
READY_LINE = "connected as"
# Points discord.py at the fake from environment variables, shortens the post-READY guild wait,
# then runs the real entry point.
LAUNCHER = """
import os, sys, yarl, discord
discord.http.Route.BASE = os.environ["FAKE_DISCORD_REST"]
discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(os.environ["FAKE_DISCORD_GATEWAY"])
import bot.__main__ as entry

class QuickReady(entry.Courier):
    def __init__(self, settings):
        super().__init__(settings)
        self._connection.guild_ready_timeout = 0.05

entry.Courier = QuickReady
sys.exit(entry.main())
"""


@dataclass
class Child:
    """A running bot process and everything it printed so far."""

    process: asyncio.subprocess.Process
    lines: list[str] = field(default_factory=list)
    printed: asyncio.Event = field(default_factory=asyncio.Event)
    ended: bool = False

    @property
    def output(self) -> str:
        return "".join(self.lines)

    async def pump(self) -> None:
        assert self.process.stdout is not None
        async for raw in self.process.stdout:
            self.lines.append(raw.decode(errors="replace"))
            self.printed.set()
            self.printed = asyncio.Event()
        self.ended = True
        self.printed.set()

    async def wait_for_line(self, text: str) -> None:
        """Wait (bounded) until the child has printed a line containing `text`."""
        async with asyncio.timeout(PROCESS_TIMEOUT):
            while text not in self.output:
                if self.ended:
                    raise AssertionError(f"child ended its output before printing {text!r}:\n{self.output}")
                await self.printed.wait()


def child_env(tmp_path: Path, rest: str, gateway: str, **extra: str) -> dict[str, str]:
    """A minimal environment: no inherited tokens or settings, state kept in tmp_path."""
    inherited = ("PATH", "LANG", "SYSTEMROOT", "EVENT_LOOP")  # the child runs on the suite's loop
    env = {key: os.environ[key] for key in inherited if key in os.environ}
    return {
        **env,
        "PYTHONPATH": str(ROOT),
        "HOME": str(tmp_path),
        "COURIER_STATE_DIR": str(tmp_path / "state"),
        "LOG_LEVEL": "INFO",
        "FAKE_DISCORD_REST": rest,
        "FAKE_DISCORD_GATEWAY": gateway,
        **extra,
    }


@contextlib.asynccontextmanager
async def bot_process(env: dict[str, str], cwd: Path) -> AsyncIterator[Child]:
    """Start the launcher; on the way out make sure the child is gone and its output drained."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        LAUNCHER,
        env=env,
        cwd=cwd,  # no .env in a temporary directory
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    child = Child(process)
    pump = asyncio.create_task(child.pump())
    try:
        yield child
    finally:
        if process.returncode is None:
            process.kill()
        async with asyncio.timeout(PROCESS_TIMEOUT):
            await process.wait()
            await pump


async def exit_code(child: Child) -> int:
    async with asyncio.timeout(PROCESS_TIMEOUT):
        return await child.process.wait()


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def assert_clean(output: str) -> None:
    assert "Traceback" not in output
    assert TOKEN not in output


async def test_e2e_process_rejected_token_exits_2_without_traceback(tmp_path: Path) -> None:
    async with FakeDiscord(token="b3RoZXI.dG9rZW4.aXMtdmFsaWQ") as fake:
        env = child_env(tmp_path, fake.rest_base, str(fake.gateway_url), DISCORD_TOKEN=TOKEN)
        async with bot_process(env, tmp_path) as child:
            code = await exit_code(child)
    assert code == 2, child.output
    assert "Discord rejected DISCORD_TOKEN" in child.output
    assert_clean(child.output)
    assert [r.path for r in fake.requests] == ["/users/@me"]
    assert not fake.identified.is_set()


async def test_e2e_process_discord_unreachable_exits_3(tmp_path: Path) -> None:
    port = closed_port()
    env = child_env(
        tmp_path, f"http://127.0.0.1:{port}/api/v10", f"ws://127.0.0.1:{port}/", DISCORD_TOKEN=TOKEN
    )
    async with bot_process(env, tmp_path) as child:
        code = await exit_code(child)
    assert code == 3, child.output
    assert "cannot reach Discord" in child.output
    assert_clean(child.output)


async def test_e2e_process_missing_token_exits_2_before_any_request(tmp_path: Path) -> None:
    async with FakeDiscord() as fake:
        env = child_env(tmp_path, fake.rest_base, str(fake.gateway_url))
        async with bot_process(env, tmp_path) as child:
            code = await exit_code(child)
    assert code == 2, child.output
    assert "DISCORD_TOKEN" in child.output
    assert "Traceback" not in child.output
    assert fake.requests == []


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_e2e_process_signal_closes_everything_and_exits_0(tmp_path: Path, signum: int) -> None:
    async with FakeDiscord() as fake:
        env = child_env(tmp_path, fake.rest_base, str(fake.gateway_url), DISCORD_TOKEN=TOKEN)
        async with bot_process(env, tmp_path) as child:
            await child.wait_for_line(READY_LINE)
            assert fake.open_sessions == 1
            child.process.send_signal(signum)
            code = await exit_code(child)
        await fake.wait_until(lambda: fake.open_sessions == 0)
    assert code == 0, child.output
    assert "shutdown requested" in child.output
    assert "stopped cleanly" in child.output
    assert_clean(child.output)
    assert len(fake.gateway_closes) == 1
    assert any(r.method == "PUT" and r.path.endswith("/commands") for r in fake.requests)


async def test_e2e_process_sigterm_lets_a_running_command_finish(
    tmp_path: Path, local_server: ServerFactory
) -> None:
    arrived, release = asyncio.Event(), asyncio.Event()

    async def slow_pypi(request: web.Request) -> web.Response:
        arrived.set()
        async with asyncio.timeout(PROCESS_TIMEOUT):
            await release.wait()
        return web.json_response({"info": {"name": "requests", "version": "2.32.3"}, "urls": []})

    upstream = await local_server({"/pypi/requests/json": slow_pypi})
    async with FakeDiscord() as fake:
        env = child_env(
            tmp_path, fake.rest_base, str(fake.gateway_url), DISCORD_TOKEN=TOKEN, PYPI_URL=upstream
        )
        async with bot_process(env, tmp_path) as child:
            await child.wait_for_line(READY_LINE)
            running = await fake.send_interaction("pypi", options={"package": "requests"})
            async with asyncio.timeout(PROCESS_TIMEOUT):
                await arrived.wait()
            child.process.send_signal(signal.SIGTERM)
            await child.wait_for_line("running command(s)")
            late = await fake.send_interaction("pypi", options={"package": "requests"})
            refused = await fake.wait_for_reply(late)
            release.set()
            code = await exit_code(child)
            answered = fake.replies(running)
    assert code == 0, child.output
    assert [r.kind for r in answered] == ["followup"]
    assert answered[0].embeds[0]["title"] == "requests 2.32.3"
    assert refused.content == "I'm restarting; please try again in a minute." and refused.ephemeral
    assert_clean(child.output)
