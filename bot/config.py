"""The bot's settings: read once from the environment (and `.env`), validated, immutable."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from services.config import (
    HTTPSettings,
    SettingsError,
    env_float,
    env_optional_str,
    env_str,
)

LOG_LEVELS = ("TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR", "CRITICAL")
SYNC_MODES = ("auto", "always", "never")
SyncMode = Literal["auto", "always", "never"]
# Discord's maximum snowflake is far below this; anything larger is a typo.
MAX_SNOWFLAKE = 2**63 - 1


class MissingSettingError(SettingsError):
    """A required setting is absent; the message says where to put it."""

    def __init__(self, key: str, hint: str) -> None:
        ValueError.__init__(self, f"{key} is not set: {hint}")
        self.key = key
        self.expected = "a value"


def _snowflake(key: str, value: str) -> int:
    if not value.isdigit() or not 0 < int(value) <= MAX_SNOWFLAKE:
        raise SettingsError(key, value, "a Discord ID (a positive whole number)")
    return int(value)


def env_snowflake(env: Mapping[str, str], key: str) -> int | None:
    """Read an optional Discord ID."""
    value = env_optional_str(env, key)
    return None if value is None else _snowflake(key, value)


def env_snowflakes(env: Mapping[str, str], key: str) -> frozenset[int]:
    """Read a comma- or space-separated list of Discord IDs."""
    value = env_optional_str(env, key) or ""
    parts = [part for part in value.replace(",", " ").split() if part]
    return frozenset(_snowflake(key, part) for part in parts)


def env_choice(env: Mapping[str, str], key: str, default: str, choices: tuple[str, ...]) -> str:
    """Read a setting that must be one of `choices` (case-insensitive)."""
    value = env_str(env, key, default)
    for choice in choices:
        if value.lower() == choice.lower():
            return choice
    raise SettingsError(key, value, "one of " + ", ".join(choices))


def read_token(env: Mapping[str, str]) -> str:
    """Read DISCORD_TOKEN, refusing absent or obviously malformed values without echoing them."""
    token = env_optional_str(env, "DISCORD_TOKEN")
    if token is None:
        raise MissingSettingError(
            "DISCORD_TOKEN", "copy .env.example to .env and put your bot token there (see README)"
        )
    if token.lower().startswith("bot "):
        token = token[4:].strip()
    if any(c.isspace() or not c.isprintable() for c in token) or token.count(".") != 2:
        raise SettingsError(
            "DISCORD_TOKEN", token, "a bot token (three dot-separated parts, no spaces)", secret=True
        )
    return token


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
    http: HTTPSettings = field(default_factory=HTTPSettings)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> BotSettings:
        """Build settings from `env` (the process environment by default), validating every key."""
        env = os.environ if env is None else env
        state_dir = env_optional_str(env, "COURIER_STATE_DIR")
        health_file = env_optional_str(env, "COURIER_HEALTH_FILE")
        return cls(
            token=read_token(env),
            guild_id=env_snowflake(env, "DISCORD_GUILD_ID"),
            owner_ids=env_snowflakes(env, "BOT_OWNER_IDS"),
            log_level=env_choice(env, "LOG_LEVEL", "INFO", LOG_LEVELS),
            command_sync=env_choice(env, "COMMAND_SYNC", "auto", SYNC_MODES),  # type: ignore[arg-type]
            state_dir=Path(state_dir) if state_dir else default_state_dir(env),
            health_file=Path(health_file) if health_file else None,
            shutdown_grace=env_float(env, "SHUTDOWN_GRACE", 8.0, minimum=0, maximum=300),
            http=HTTPSettings.from_env(env),
        )
