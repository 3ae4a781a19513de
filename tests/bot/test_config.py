"""Bot settings: every key validated, the token required and never echoed."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.__main__ import main
from bot.config import BotSettings, MissingSettingError
from services.config import SettingsError

TOKEN = "MTIz.NDU2.Nzg5-secret"


def settings(**env: str) -> BotSettings:
    return BotSettings.from_env({"DISCORD_TOKEN": TOKEN, **env})


def test_from_env_reads_every_bot_key(tmp_path: Path) -> None:
    s = settings(
        DISCORD_GUILD_ID="123456789012345678",
        BOT_OWNER_IDS="11, 22 33",
        LOG_LEVEL="debug",
        COMMAND_SYNC="Always",
        COURIER_STATE_DIR=str(tmp_path),
        COURIER_HEALTH_FILE=str(tmp_path / "health"),
        SHUTDOWN_GRACE="2.5",
        HTTP_MAX_CONNECTIONS="7",
    )
    assert s.guild_id == 123456789012345678
    assert s.owner_ids == {11, 22, 33}
    assert (s.log_level, s.command_sync, s.shutdown_grace) == ("DEBUG", "always", 2.5)
    assert s.state_dir == tmp_path and s.health_file == tmp_path / "health"
    assert s.http.max_connections == 7


def test_from_env_defaults_suit_production() -> None:
    s = settings()
    assert (s.guild_id, s.owner_ids, s.log_level, s.command_sync) == (None, frozenset(), "INFO", "auto")
    assert s.health_file is None and s.state_dir.name == "courier"


@pytest.mark.parametrize("value", ["", "   "])
def test_missing_token_names_the_key_and_the_example(value: str) -> None:
    with pytest.raises(MissingSettingError) as info:
        BotSettings.from_env({"DISCORD_TOKEN": value})
    assert "DISCORD_TOKEN" in str(info.value) and ".env.example" in str(info.value)


@pytest.mark.parametrize("token", ["has space.in.it", "only-one-part", "a.b\x00.c"])
def test_malformed_token_is_refused_without_echoing_it(token: str) -> None:
    with pytest.raises(SettingsError) as info:
        BotSettings.from_env({"DISCORD_TOKEN": token})
    assert "DISCORD_TOKEN" in str(info.value) and token not in str(info.value)


def test_token_with_bot_prefix_is_accepted_and_hidden_from_repr() -> None:
    s = BotSettings.from_env({"DISCORD_TOKEN": f"Bot {TOKEN}"})
    assert s.token == TOKEN
    assert TOKEN not in repr(s)


@pytest.mark.parametrize(
    ("key", "value", "shown"),
    [
        ("DISCORD_GUILD_ID", "my-server", "my-server"),
        ("DISCORD_GUILD_ID", "0", "0"),
        ("BOT_OWNER_IDS", "11,bob", "bob"),
        ("LOG_LEVEL", "LOUD", "LOUD"),
        ("COMMAND_SYNC", "sometimes", "sometimes"),
        ("SHUTDOWN_GRACE", "-1", "-1"),
        ("HTTP_READ_TIMEOUT", "forever", "forever"),
    ],
)
def test_bad_value_names_key_and_value(key: str, value: str, shown: str) -> None:
    with pytest.raises(SettingsError) as info:
        settings(**{key: value})
    assert f"{key}={shown!r}" in str(info.value)


def test_main_exits_2_with_one_line_when_token_missing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)  # no .env here
    monkeypatch.delenv("DISCORD_TOKEN", raising=False)
    assert main() == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "DISCORD_TOKEN" in err and "Traceback" not in err


def test_main_reads_dotenv_but_real_environment_wins(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text(f"DISCORD_TOKEN={TOKEN}\nHTTP_MAX_CONNECTIONS=5\n")
    monkeypatch.delenv("DISCORD_TOKEN", raising=False)
    monkeypatch.setenv("HTTP_MAX_CONNECTIONS", "zero")  # the real environment's bad value must win
    assert main() == 2
    err = capsys.readouterr().err
    assert "HTTP_MAX_CONNECTIONS='zero'" in err and TOKEN not in err


def test_from_env_metrics_port_off_by_default_and_validated() -> None:
    assert (settings().metrics_port, settings().metrics_host) == (None, "127.0.0.1")
    s = settings(METRICS_PORT="9464", METRICS_HOST="0.0.0.0")
    assert (s.metrics_port, s.metrics_host) == (9464, "0.0.0.0")
    for bad in ("0", "70000", "http"):
        with pytest.raises(SettingsError, match="METRICS_PORT"):
            settings(METRICS_PORT=bad)


@pytest.mark.parametrize("quoted", [f'"{TOKEN}"', f"'{TOKEN}'", f' "{TOKEN}" ', f'"Bot {TOKEN}"'])
def test_token_in_matching_quotes_is_read_without_them(quoted: str) -> None:
    assert BotSettings.from_env({"DISCORD_TOKEN": quoted}).token == TOKEN


@pytest.mark.parametrize(
    ("key", "value", "attribute", "expected"),
    [
        ("DISCORD_GUILD_ID", '"1234"', "guild_id", 1234),
        ("BOT_OWNER_IDS", "'11, 22'", "owner_ids", frozenset({11, 22})),
        ("LOG_LEVEL", '"debug"', "log_level", "DEBUG"),
        ("COMMAND_SYNC", "'never'", "command_sync", "never"),
        ("SHUTDOWN_GRACE", '"2.5"', "shutdown_grace", 2.5),
        ("COURIER_HEALTH_FILE", '"/tmp/health"', "health_file", Path("/tmp/health")),
        ("DISCORD_GUILD_ID", '""', "guild_id", None),
    ],
)
def test_quoted_values_mean_what_they_quote(key: str, value: str, attribute: str, expected: object) -> None:
    assert getattr(settings(**{key: value}), attribute) == expected


def test_every_bad_key_is_reported_in_one_error() -> None:
    with pytest.raises(SettingsError) as info:
        BotSettings.from_env(
            {
                "DISCORD_TOKEN": "not a token",
                "DISCORD_GUILD_ID": "my-server",
                "LOG_LEVEL": "LOUD",
                "HTTP_READ_TIMEOUT": "forever",
                "HTTP_HTTP2": "maybe",
            }
        )
    message = str(info.value)
    assert message.startswith("5 settings are invalid: ")
    for key in (
        "DISCORD_TOKEN=<hidden>",
        "DISCORD_GUILD_ID=",
        "LOG_LEVEL=",
        "HTTP_READ_TIMEOUT=",
        "HTTP_HTTP2=",
    ):
        assert key in message
    assert "not a token" not in message and len(info.value.errors) == 5


def test_main_prints_every_bad_key_on_one_line_and_exits_2(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DISCORD_TOKEN", TOKEN)
    monkeypatch.setenv("LOG_LEVEL", "LOUD")
    monkeypatch.setenv("HTTP_MAX_CONNECTIONS", "zero")
    assert main() == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "LOG_LEVEL='LOUD'" in err and "HTTP_MAX_CONNECTIONS='zero'" in err


def test_shard_errors_are_reported_with_the_other_bad_keys() -> None:
    with pytest.raises(SettingsError) as info:
        settings(SHARD_IDS="0-1", LOG_LEVEL="LOUD")
    assert [error.key for error in info.value.errors] == ["SHARD_COUNT", "LOG_LEVEL"]
