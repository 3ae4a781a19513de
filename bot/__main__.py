"""`python -m bot`: read settings, start the bot, stop cleanly on SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import signal
import sys
from collections.abc import Sequence
from typing import NoReturn

import aiohttp
import discord
from loguru import logger

from bot.bot import Courier
from bot.config import BotSettings, load_env_file
from bot.event_loop import loop_factory
from bot.logging import setup_logging
from bot.metrics_server import MetricsServer
from services.config import SettingsError
from services.http_client import http_client

EXIT_OK = 0
EXIT_CONFIG = 2
EXIT_UNREACHABLE = 3
# Gateway close codes that mean the shard settings don't suit the bot: retrying can't help.
SHARD_REFUSALS = {
    4010: "Discord refused the shard this process identified with: check SHARD_IDS and SHARD_COUNT",
    4011: "Discord requires more shards for this bot: raise SHARD_COUNT, or unset it and SHARD_IDS",
}
PROG = "python -m bot"
DESCRIPTION = "Courier: a Discord bot whose slash commands share one resilient HTTP client."
EPILOG = """\
commands:
  uv run python -m bot          run the bot; Ctrl-C or SIGTERM stops it cleanly
  uv run python -m bot.health   exit 0 while the running bot is connected (the container health check)
  uv run pytest                 run the tests
  bash .ci/run                  the full check: format, lint, types, Dockerfile lint, tests (3.11, 3.13)
  python -m bot                 what the Docker image runs

settings:
  Read from the environment and from .env in the working directory or a parent; real environment
  variables win. .env.example lists and explains every one; only DISCORD_TOKEN is required.

exit codes:
  0  clean shutdown (SIGINT/SIGTERM), or --help
  2  a missing or invalid setting (every bad key is named), a token Discord rejects, shard settings
     Discord refuses, or a bad argument
  3  Discord can't be reached
"""


class ArgumentParser(argparse.ArgumentParser):
    """argparse, pointing at --help when it refuses an argument."""

    def error(self, message: str) -> NoReturn:
        """Print what was wrong and how to get help, then exit 2."""
        self.exit(
            EXIT_CONFIG, f"{self.prog}: {message}\nRun `{self.prog} --help` for the commands and settings.\n"
        )


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """The command line: only --help; settings come from the environment and .env."""
    parser = ArgumentParser(
        prog=PROG,
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    return parser.parse_args(argv)


class Stop(Exception):
    """A startup failure that ends the process with `code` and a one-line message."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


async def run(settings: BotSettings) -> int:
    """Run the bot until Discord ends the session or a signal asks us to stop."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):  # Windows has no add_signal_handler
            loop.add_signal_handler(sig, stop.set)
    bot = Courier(settings)
    server = await start_metrics_server(bot, settings)
    try:
        return await _run_bot(bot, settings, stop)
    finally:
        if server is not None:
            await server.close()


async def start_metrics_server(bot: Courier, settings: BotSettings) -> MetricsServer | None:
    """Listen on METRICS_HOST:METRICS_PORT when set; a taken port ends the start with one clear line."""
    if settings.metrics_port is None or bot.metrics is None:
        return None
    server = MetricsServer(bot.metrics, bot.health, settings.metrics_host, settings.metrics_port)
    try:
        await server.start()
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            message = f"METRICS_PORT {settings.metrics_port} is already in use on {settings.metrics_host}"
        else:
            message = (
                f"cannot listen on METRICS_HOST {settings.metrics_host} "
                f"METRICS_PORT {settings.metrics_port}: {exc.strerror or exc}"
            )
        raise Stop(EXIT_CONFIG, f"{message}; choose another port or stop what holds it") from None
    return server


async def _run_bot(bot: Courier, settings: BotSettings, stop: asyncio.Event) -> int:
    """Log in and run until Discord ends the session or `stop` is set."""
    async with bot:
        session = asyncio.create_task(bot.start(settings.token), name="discord")
        stopping = asyncio.create_task(stop.wait(), name="signals")
        await asyncio.wait({session, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if stop.is_set():
            logger.info("shutdown requested; closing")
            await bot.close()
        stopping.cancel()
        try:
            await session
        except discord.LoginFailure as exc:
            raise Stop(EXIT_CONFIG, f"Discord rejected DISCORD_TOKEN ({exc}); check the token") from None
        except discord.PrivilegedIntentsRequired:
            raise Stop(EXIT_CONFIG, "Discord refused an intent the bot asked for") from None
        except discord.ConnectionClosed as exc:
            if exc.code not in SHARD_REFUSALS:
                raise
            raise Stop(EXIT_CONFIG, f"{SHARD_REFUSALS[exc.code]} (gateway close {exc.code})") from None
        except (TimeoutError, aiohttp.ClientConnectionError, OSError) as exc:
            raise Stop(EXIT_UNREACHABLE, f"cannot reach Discord: {type(exc).__name__}: {exc}") from None
        except discord.DiscordServerError as exc:
            raise Stop(EXIT_UNREACHABLE, f"Discord is failing ({exc.status}); try again later") from None
        except discord.GatewayNotFound:
            raise Stop(EXIT_UNREACHABLE, "cannot find Discord's gateway; try again later") from None
    logger.info("stopped cleanly")
    return EXIT_OK


def main(argv: Sequence[str] = ()) -> int:
    """Start Courier; returns the process exit status."""
    try:
        parse_args(argv)
    except SystemExit as exc:  # --help, or an argument argparse refused
        return exc.code if isinstance(exc.code, int) else EXIT_CONFIG
    load_env_file()
    try:
        settings = BotSettings.from_env()
    except SettingsError as exc:
        print(f"courier: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    setup_logging(settings.log_level, secrets=[settings.token])
    http_client.configure(settings.http)
    logger.info("event loop: {}", settings.event_loop)
    try:
        # The whole bot runs on this loop: discord.py's gateway and REST (aiohttp), the HTTP client, cogs.
        with asyncio.Runner(loop_factory=loop_factory(settings.event_loop)) as runner:
            return runner.run(run(settings))
    except Stop as exc:
        logger.error("{}", exc)
        return exc.code
    except KeyboardInterrupt:  # a second Ctrl-C during shutdown
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
