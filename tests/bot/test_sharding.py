"""Sharding: SHARD_COUNT/SHARD_IDS validated, the bot runs those shards, one process syncs commands."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from discord.ext import commands
from loguru import logger

from bot.__main__ import main
from bot.bot import Courier, format_shard_ids
from bot.config import BotSettings, MissingSettingError, parse_shard_ids
from services.config import SettingsError
from tests.bot.conftest import courier_session
from tests.bot.test_bot import recorder

TOKEN = "MTIz.NDU2.Nzg5"


def settings(**env: str) -> BotSettings:
    return BotSettings.from_env({"DISCORD_TOKEN": TOKEN, **env})


@pytest.fixture
def log_lines() -> Iterator[list[str]]:
    lines: list[str] = []
    sink = logger.add(lines.append, level="INFO", format="{message}")
    yield lines
    logger.remove(sink)


@pytest.mark.parametrize(
    ("value", "count", "ids"),
    [
        ("0-3", 4, (0, 1, 2, 3)),
        ("0,2", 4, (0, 2)),
        (" 2 , 0 ", 4, (0, 2)),
        ("0-1, 4 - 5", 8, (0, 1, 4, 5)),
        ("3", 4, (3,)),
        ("1-1", 2, (1,)),
    ],
)
def test_shard_ids_ranges_and_lists(value: str, count: int, ids: tuple[int, ...]) -> None:
    assert parse_shard_ids(value, count) == ids


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("0-4", "ids from 0 to 3 (SHARD_COUNT=4); 4 is not"),
        ("7", "ids from 0 to 3 (SHARD_COUNT=4); 7 is not"),
        ("0-1,1", "each id once; 1 is named twice"),
        ("2,0,2", "each id once; 2 is named twice"),
        ("3-1", "shard ids like 0-3 or 0,2"),
        ("0-", "shard ids like 0-3 or 0,2"),
        ("-1", "shard ids like 0-3 or 0,2"),
        ("0,,1", "shard ids like 0-3 or 0,2"),
        ("1-2-3", "shard ids like 0-3 or 0,2"),
        ("one", "shard ids like 0-3 or 0,2"),
        ("²", "shard ids like 0-3 or 0,2"),
    ],
)
def test_shard_ids_bad_value_names_key_value_and_rule(value: str, why: str) -> None:
    with pytest.raises(SettingsError) as info:
        settings(SHARD_COUNT="4", SHARD_IDS=value)
    assert f"SHARD_IDS={value!r} is invalid" in str(info.value)
    assert why in str(info.value)


def test_shard_ids_without_count_names_the_missing_setting() -> None:
    with pytest.raises(MissingSettingError) as info:
        settings(SHARD_IDS="0-1")
    assert str(info.value).startswith("SHARD_COUNT is not set")
    assert "SHARD_IDS='0-1'" in str(info.value)


@pytest.mark.parametrize("value", ["0", "-2", "two", "65537"])
def test_shard_count_must_be_a_sane_whole_number(value: str) -> None:
    with pytest.raises(SettingsError) as info:
        settings(SHARD_COUNT=value)
    assert f"SHARD_COUNT={value!r}" in str(info.value)


def test_shard_settings_unset_leave_the_choice_to_discord() -> None:
    s = settings()
    assert (s.shard_count, s.shard_ids) == (None, None)
    bot = Courier(s)
    assert isinstance(bot, commands.AutoShardedBot)
    assert (bot.shard_count, bot.shard_ids) == (None, None)


def test_shard_settings_reach_the_bot() -> None:
    bot = Courier(settings(SHARD_COUNT="4", SHARD_IDS="1,3"))
    assert (bot.shard_count, bot.shard_ids) == (4, [1, 3])
    every = Courier(settings(SHARD_COUNT="2"))
    assert (every.shard_count, every.shard_ids) == (2, None)


@pytest.mark.parametrize(
    ("env", "syncs"),
    [
        ({}, True),
        ({"SHARD_COUNT": "4"}, True),
        ({"SHARD_COUNT": "4", "SHARD_IDS": "0-1"}, True),
        ({"SHARD_COUNT": "4", "SHARD_IDS": "2-3"}, False),
        ({"SHARD_COUNT": "2", "SHARD_IDS": "1"}, False),
    ],
)
def test_sync_belongs_to_the_process_running_shard_0(env: dict[str, str], syncs: bool) -> None:
    assert settings(**env).syncs_commands is syncs


async def test_sync_skipped_with_a_log_line_by_a_process_without_shard_0(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, log_lines: list[str]
) -> None:
    others = Courier(BotSettings(token=TOKEN, state_dir=tmp_path, shard_count=2, shard_ids=(1,)))
    await others.load_cogs()
    rec = recorder(others, monkeypatch)
    await others.sync_commands()
    assert rec.calls == []
    assert "not syncing application commands: the process running shard 0 does\n" in log_lines

    first = Courier(BotSettings(token=TOKEN, state_dir=tmp_path, shard_count=2, shard_ids=(0,)))
    await first.load_cogs()
    rec = recorder(first, monkeypatch)
    await first.sync_commands()
    assert rec.calls == [None]


async def test_sync_always_still_only_from_shard_0(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bot = Courier(
        BotSettings(token=TOKEN, state_dir=tmp_path, command_sync="always", shard_count=2, shard_ids=(1,))
    )
    rec = recorder(bot, monkeypatch)
    await bot.sync_commands()
    assert rec.calls == []


@pytest.mark.parametrize(
    ("ids", "shown"), [([], "none"), ([0], "0"), ([0, 1, 2, 3], "0-3"), ([0, 2, 3, 7], "0,2-3,7")]
)
def test_format_shard_ids_reads_like_the_setting(ids: list[int], shown: str) -> None:
    assert format_shard_ids(ids) == shown
    if ids:
        assert parse_shard_ids(shown, 8) == tuple(ids)


def test_main_exits_2_when_shard_ids_lack_a_count(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)  # no .env here
    monkeypatch.setenv("DISCORD_TOKEN", TOKEN)
    monkeypatch.setenv("SHARD_IDS", "0")
    monkeypatch.delenv("SHARD_COUNT", raising=False)
    assert main() == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("courier: SHARD_COUNT is not set")


async def test_connected_while_every_shard_is_open(tmp_path: Path) -> None:
    async with courier_session(tmp_path) as (fake, bot):
        assert bot.connected()
        assert fake.identifies == [(0, 1)]  # discord.py took /gateway/bot's count
    assert not bot.connected()
