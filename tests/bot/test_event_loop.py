"""EVENT_LOOP: which loop the bot runs on, validated, and used by the entry point."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

import bot.__main__ as entry
from bot.config import BotSettings
from bot.event_loop import loop_factory, read_event_loop, uvloop_available
from services.config import SettingsError

TOKEN = "MTIz.NDU2.Nzg5-secret"
needs_uvloop = pytest.mark.skipif(not uvloop_available(), reason="uvloop is not installed here")


@needs_uvloop
def test_event_loop_defaults_to_uvloop_where_installed() -> None:
    assert read_event_loop({}) == "uvloop"
    assert BotSettings.from_env({"DISCORD_TOKEN": TOKEN}).event_loop == "uvloop"


@pytest.mark.parametrize("value", ["asyncio", "AsyncIO", " asyncio "])
def test_event_loop_asyncio_is_accepted_in_any_case(value: str) -> None:
    assert read_event_loop({"EVENT_LOOP": value}) == "asyncio"


def test_event_loop_bad_value_names_the_key_the_value_and_the_choices() -> None:
    with pytest.raises(SettingsError) as info:
        read_event_loop({"EVENT_LOOP": "trio"})
    assert str(info.value) == "EVENT_LOOP='trio' is invalid: expected one of uvloop, asyncio"


def test_event_loop_uvloop_where_missing_says_to_choose_asyncio(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("bot.event_loop.uvloop_available", lambda: False)
    assert read_event_loop({}) == "asyncio"
    with pytest.raises(SettingsError) as info:
        read_event_loop({"EVENT_LOOP": "uvloop"})
    assert "EVENT_LOOP='uvloop'" in str(info.value) and "uvloop is not installed" in str(info.value)


@needs_uvloop
def test_loop_factory_makes_the_named_kind_of_loop() -> None:
    import uvloop  # noqa: PLC0415 - present only where uvloop is

    for name, kind in (("uvloop", uvloop.Loop), ("asyncio", asyncio.BaseEventLoop)):
        loop = loop_factory(name)()
        try:
            assert isinstance(loop, kind)
            assert name == "asyncio" or not isinstance(loop, asyncio.BaseEventLoop)
        finally:
            loop.close()


@pytest.mark.parametrize("name", ["uvloop", "asyncio"])
def test_main_runs_the_bot_on_the_configured_loop(
    name: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    if name == "uvloop" and not uvloop_available():
        pytest.skip("uvloop is not installed here")
    seen: list[str] = []

    async def fake_run(settings: BotSettings) -> int:
        seen.append(type(asyncio.get_running_loop()).__module__)
        return 0

    monkeypatch.chdir(tmp_path)  # no .env here
    monkeypatch.setenv("DISCORD_TOKEN", TOKEN)
    monkeypatch.setenv("EVENT_LOOP", name)
    monkeypatch.setattr(entry, "run", fake_run)
    monkeypatch.setattr(entry, "setup_logging", lambda *args, **kwargs: None)  # keep the suite's sinks
    assert entry.main() == 0
    assert seen == ["uvloop" if name == "uvloop" else "asyncio.unix_events"]


async def test_suite_runs_on_the_loop_event_loop_names() -> None:
    expected = read_event_loop(os.environ)
    assert type(asyncio.get_running_loop()).__module__.startswith(expected)
