"""The container health check reads the file the bot touches while connected."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from bot.bot import write_health
from bot.health import STALE_AFTER, check, main


def test_fresh_file_is_healthy(tmp_path: Path) -> None:
    path = tmp_path / "health"
    write_health(path, connected=True)
    healthy, reason = check(path)
    assert healthy and "connected" in reason


def test_disconnect_removes_the_file_and_fails_the_check(tmp_path: Path) -> None:
    path = tmp_path / "health"
    write_health(path, connected=True)
    write_health(path, connected=False)
    assert check(path) == (False, "not connected to Discord (no health file)")


def test_stale_file_fails_the_check(tmp_path: Path) -> None:
    path = tmp_path / "health"
    write_health(path, connected=True)
    old = time.time() - STALE_AFTER - 5
    os.utime(path, (old, old))
    healthy, reason = check(path)
    assert not healthy and "no sign of life" in reason


def test_main_exit_status_follows_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "health"
    monkeypatch.setenv("COURIER_HEALTH_FILE", str(path))
    assert main() == 1
    write_health(path, connected=True)
    assert main() == 0
    monkeypatch.delenv("COURIER_HEALTH_FILE")
    assert main() == 1
