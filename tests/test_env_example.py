"""`.env.example` documents every setting the code reads, and its values pass validation."""

from __future__ import annotations

import re
from pathlib import Path

from dotenv import dotenv_values

from bot.config import BotSettings

ROOT = Path(__file__).resolve().parent.parent
# A setting read through one of the env_* helpers: env_int(env, "HTTP_MAX_CONNECTIONS", ...).
READ = re.compile(r"env_\w+\(\s*\w+,\s*\"([A-Z][A-Z0-9_]+)\"")
NOT_SETTINGS = {"XDG_STATE_HOME"}


def example() -> dict[str, str | None]:
    return dotenv_values(ROOT / ".env.example", interpolate=False)


def test_every_setting_read_by_the_code_is_documented() -> None:
    read = {
        key
        for folder in ("bot", "cogs", "services")
        for path in (ROOT / folder).rglob("*.py")
        for key in READ.findall(path.read_text())
    }
    assert len(read) > 30  # the pattern still finds settings
    assert sorted(read - NOT_SETTINGS - set(example())) == []


def test_example_values_pass_validation_once_a_token_is_filled_in() -> None:
    values = {k: v for k, v in example().items() if v is not None}
    values["DISCORD_TOKEN"] = "MTIz.NDU2.Nzg5"
    settings = BotSettings.from_env(values)
    assert settings.http.max_connections == 100 and settings.command_sync == "auto"
