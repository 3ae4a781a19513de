"""The bot's settings: read once from the environment (and `.env`), validated, immutable."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from dotenv import find_dotenv, load_dotenv

from bot.event_loop import default_event_loop, read_event_loop
from services.config import (
    HTTPSettings,
    SettingsError,
    collect_settings_errors,
    env_float,
    env_int,
    env_optional_str,
    env_str,
    invalid,
)

LOG_LEVELS = ("TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR", "CRITICAL")
SYNC_MODES = ("auto", "always", "never")
SyncMode = Literal["auto", "always", "never"]
# Discord's maximum snowflake is far below this; anything larger is a typo.
MAX_SNOWFLAKE = 2**63 - 1
# Far above what the largest bots run; a bigger SHARD_COUNT is a typo.
MAX_SHARDS = 65536
SHARD_IDS_FORMAT = "shard ids like 0-3 or 0,2 (ranges and single ids, comma-separated)"


class MissingSettingError(SettingsError):
    """A required setting is absent; the message says where to put it."""

    def __init__(self, key: str, hint: str) -> None:
        ValueError.__init__(self, f"{key} is not set: {hint}")
        self.key = key
        self.expected = "a value"


def load_env_file() -> None:
    """Load .env from the working directory or a parent; real environment variables win over it."""
    load_dotenv(find_dotenv(usecwd=True), override=False)


def _snowflake(key: str, value: str) -> int:
    if not value.isdigit() or not 0 < int(value) <= MAX_SNOWFLAKE:
        raise SettingsError(key, value, "a Discord ID (a positive whole number)")
    return int(value)


def env_snowflake(env: Mapping[str, str], key: str) -> int | None:
    """Read an optional Discord ID."""
    value = env_optional_str(env, key)
    try:
        return None if value is None else _snowflake(key, value)
    except SettingsError as exc:
        return invalid(exc, None)


def env_snowflakes(env: Mapping[str, str], key: str) -> frozenset[int]:
    """Read a comma- or space-separated list of Discord IDs."""
    value = env_optional_str(env, key) or ""
    parts = [part for part in value.replace(",", " ").split() if part]
    try:
        return frozenset(_snowflake(key, part) for part in parts)
    except SettingsError as exc:
        return invalid(exc, frozenset())


def env_choice(env: Mapping[str, str], key: str, default: str, choices: tuple[str, ...]) -> str:
    """Read a setting that must be one of `choices` (case-insensitive)."""
    value = env_str(env, key, default)
    for choice in choices:
        if value.lower() == choice.lower():
            return choice
    return invalid(SettingsError(key, value, "one of " + ", ".join(choices)), default)


def read_token(env: Mapping[str, str]) -> str:
    """Read DISCORD_TOKEN, refusing absent or obviously malformed values without echoing them."""
    token = env_optional_str(env, "DISCORD_TOKEN")
    if token is None:
        hint = "copy .env.example to .env and put your bot token there (see README)"
        return invalid(MissingSettingError("DISCORD_TOKEN", hint), "")
    if token.lower().startswith("bot "):
        token = token[4:].strip()
    if any(c.isspace() or not c.isprintable() for c in token) or token.count(".") != 2:
        expected = "a bot token (three dot-separated parts, no spaces)"
        return invalid(SettingsError("DISCORD_TOKEN", token, expected, secret=True), "")
    return token


def parse_shard_ids(value: str, count: int) -> tuple[int, ...]:
    """Parse SHARD_IDS (`0-3`, `0,2`, `0-1,4`) into sorted ids, each below `count` and named once."""
    ids: Counter[int] = Counter()
    for part in value.split(","):
        first, dash, last = (piece.strip() for piece in part.partition("-"))
        last = last if dash else first
        if not (first.isdecimal() and last.isdecimal()) or int(first) > int(last):
            raise SettingsError("SHARD_IDS", value, SHARD_IDS_FORMAT)
        if int(last) >= count:
            raise SettingsError(
                "SHARD_IDS", value, f"ids from 0 to {count - 1} (SHARD_COUNT={count}); {last} is not"
            )
        ids.update(range(int(first), int(last) + 1))
    repeated = sorted(i for i, n in ids.items() if n > 1)
    if repeated:
        raise SettingsError("SHARD_IDS", value, f"each id once; {repeated[0]} is named twice")
    return tuple(sorted(ids))


def read_shards(env: Mapping[str, str]) -> tuple[int | None, tuple[int, ...] | None]:
    """Read SHARD_COUNT and SHARD_IDS; neither set means discord.py picks the shard count."""
    count = env_int(env, "SHARD_COUNT", 0, minimum=1, maximum=MAX_SHARDS) or None
    ids = env_optional_str(env, "SHARD_IDS")
    if ids is None:
        return count, None
    try:
        if count is None:
            raise MissingSettingError(
                "SHARD_COUNT", f"SHARD_IDS={ids!r} needs the total number of shards across all processes"
            )
        return count, parse_shard_ids(ids, count)
    except SettingsError as exc:
        return invalid(exc, (count, None))


def env_port(env: Mapping[str, str], key: str) -> int | None:
    """Read an optional TCP port; absent or empty means off."""
    if env_optional_str(env, key) is None:
        return None
    return env_int(env, key, 0, minimum=1, maximum=65535)


def default_state_dir(env: Mapping[str, str]) -> Path:
    """Where the bot keeps small state files: $XDG_STATE_HOME/courier or ~/.local/state/courier."""
    base = env_optional_str(env, "XDG_STATE_HOME")
    return Path(base) / "courier" if base else Path.home() / ".local" / "state" / "courier"


@dataclass(frozen=True, slots=True)
class BotSettings:
    """Everything the bot is started with."""

    token: str = field(repr=False)
    guild_id: int | None = None
    owner_ids: frozenset[int] = frozenset()
    log_level: str = "INFO"
    command_sync: SyncMode = "auto"
    state_dir: Path = field(default_factory=lambda: Path(".courier-state"))
    health_file: Path | None = None
    shutdown_grace: float = 8.0
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    event_loop: str = field(default_factory=default_event_loop)
    http: HTTPSettings = field(default_factory=HTTPSettings)
    shard_count: int | None = None
    shard_ids: tuple[int, ...] | None = None

    @property
    def syncs_commands(self) -> bool:
        """Whether this process pushes the commands: it runs shard 0 (or every shard); others don't."""
        return self.shard_ids is None or 0 in self.shard_ids

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> BotSettings:
        """Build settings from `env` (the process environment by default); one error names every bad key."""
        with collect_settings_errors():
            return cls._read_env(os.environ if env is None else env)

    @classmethod
    def _read_env(cls, env: Mapping[str, str]) -> BotSettings:
        state_dir = env_optional_str(env, "COURIER_STATE_DIR")
        health_file = env_optional_str(env, "COURIER_HEALTH_FILE")
        shard_count, shard_ids = read_shards(env)
        return cls(
            token=read_token(env),
            guild_id=env_snowflake(env, "DISCORD_GUILD_ID"),
            owner_ids=env_snowflakes(env, "BOT_OWNER_IDS"),
            log_level=env_choice(env, "LOG_LEVEL", "INFO", LOG_LEVELS),
            command_sync=env_choice(env, "COMMAND_SYNC", "auto", SYNC_MODES),  # type: ignore[arg-type]
            state_dir=Path(state_dir) if state_dir else default_state_dir(env),
            health_file=Path(health_file) if health_file else None,
            shutdown_grace=env_float(env, "SHUTDOWN_GRACE", 8.0, minimum=0, maximum=300),
            metrics_port=env_port(env, "METRICS_PORT"),
            metrics_host=env_str(env, "METRICS_HOST", "127.0.0.1"),
            event_loop=read_event_loop(env),
            http=HTTPSettings.from_env(env),
            shard_count=shard_count,
            shard_ids=shard_ids,
        )
