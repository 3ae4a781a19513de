"""The event loop the whole bot runs on: uvloop where it is installed, else asyncio's own."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from collections.abc import Callable, Mapping

from services.config import SettingsError, env_choice

EVENT_LOOPS = ("uvloop", "asyncio")
LoopFactory = Callable[[], asyncio.AbstractEventLoop]


def uvloop_available() -> bool:
    """Whether uvloop can be imported here (it ships for Linux and macOS, not Windows)."""
    return sys.platform != "win32" and importlib.util.find_spec("uvloop") is not None


def default_event_loop() -> str:
    """uvloop when available: its I/O loop and SSL layer are Cython, asyncio's are Python."""
    return "uvloop" if uvloop_available() else "asyncio"


def read_event_loop(env: Mapping[str, str]) -> str:
    """Read EVENT_LOOP, refusing uvloop where it can't be imported."""
    name = env_choice(env, "EVENT_LOOP", default_event_loop(), EVENT_LOOPS)
    if name == "uvloop" and not uvloop_available():
        raise SettingsError(
            "EVENT_LOOP", name, "asyncio here: uvloop is not installed (it exists for Linux and macOS)"
        )
    return name


def loop_factory(name: str) -> LoopFactory:
    """A callable making a new event loop of kind `name`, for `asyncio.Runner(loop_factory=...)`."""
    if name == "uvloop":
        import uvloop  # noqa: PLC0415 - optional: absent on Windows

        return uvloop.new_event_loop
    return asyncio.new_event_loop
