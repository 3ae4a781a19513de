"""The command line of `python -m bot`: --help without a token or a login, bad arguments refused."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import bot.__main__ as entry

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def no_login(monkeypatch: pytest.MonkeyPatch) -> None:
    """No token in the environment, and any attempt to read settings or start the bot fails the test."""
    monkeypatch.setenv("DISCORD_TOKEN", "")
    monkeypatch.delenv("DISCORD_TOKEN")

    def forbidden(*_: object) -> None:
        raise AssertionError("--help must not read settings or log in")

    monkeypatch.setattr(entry, "load_env_file", forbidden)
    monkeypatch.setattr(entry, "Courier", forbidden)


@pytest.mark.parametrize("flag", ["--help", "-h"])
@pytest.mark.usefixtures("no_login")
def test_main_help_lists_commands_settings_and_exit_codes(
    flag: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert entry.main([flag]) == 0
    out = capsys.readouterr().out
    for words in (
        "python -m bot.health",
        "uv run pytest",
        ".env.example",
        "DISCORD_TOKEN",
        "exit codes",
        "3  ",
    ):
        assert words in out


@pytest.mark.parametrize("argv", [["--foo"], ["run"], ["--help=yes"]])
@pytest.mark.usefixtures("no_login")
def test_main_unknown_argument_is_refused_with_exit_2(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert entry.main(argv) == 2
    err = capsys.readouterr().err
    assert "python -m bot --help" in err and "Traceback" not in err


def test_process_help_exits_0_without_a_token(tmp_path: Path) -> None:
    env = {key: os.environ[key] for key in ("PATH", "LANG") if key in os.environ}
    done = subprocess.run(
        [sys.executable, "-m", "bot", "--help"],
        env={**env, "PYTHONPATH": str(ROOT), "HOME": str(tmp_path)},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "exit codes" in done.stdout and not done.stderr
