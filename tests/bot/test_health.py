"""The container health check reads the file the bot touches while connected."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from pathlib import Path

import pytest

from bot.bot import write_health
from bot.health import STALE_AFTER, check, main, probe
from bot.metrics import BotMetrics
from bot.metrics_server import MetricsServer
from services.http_client import http_client
from tests.bot.test_metrics import FakeBot


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
    monkeypatch.chdir(tmp_path)  # no .env here
    monkeypatch.setenv("COURIER_HEALTH_FILE", str(path))
    assert main() == 1
    write_health(path, connected=True)
    assert main() == 0
    monkeypatch.delenv("COURIER_HEALTH_FILE")
    assert main() == 1


@pytest.mark.parametrize(
    ("state", "code"), [((True, "connected to Discord"), 0), ((False, "shutting down"), 1)]
)
async def test_health_probe_asks_healthz_when_metrics_port_is_set(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], state: tuple[bool, str], code: int
) -> None:
    server = MetricsServer(BotMetrics(FakeBot(), http_client), lambda: state, "127.0.0.1", 0)
    await server.start()
    try:
        monkeypatch.setenv("METRICS_PORT", str(server.port))
        monkeypatch.setenv("METRICS_HOST", "0.0.0.0")  # probed on 127.0.0.1
        monkeypatch.delenv("COURIER_HEALTH_FILE", raising=False)
        assert await asyncio.to_thread(main) == code
    finally:
        await server.close()
    printed = capsys.readouterr()
    assert state[1] in (printed.out if code == 0 else printed.err)


def test_health_probe_without_an_answer_is_unhealthy() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    healthy, reason = probe("127.0.0.1", port, timeout=1.0)
    assert not healthy and reason.startswith(f"no answer from http://127.0.0.1:{port}/healthz")


def test_main_reads_the_setting_from_dotenv_like_the_bot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    health = tmp_path / "health"
    write_health(health, connected=True)
    (tmp_path / ".env").write_text(f'COURIER_HEALTH_FILE="{health}"\n')
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("METRICS_PORT", raising=False)
    monkeypatch.setenv("COURIER_HEALTH_FILE", "")  # recorded, so the value .env loads is removed afterwards
    monkeypatch.delenv("COURIER_HEALTH_FILE")
    assert main() == 0


def test_main_strips_quotes_docker_env_file_keeps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    health = tmp_path / "health"
    write_health(health, connected=True)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("METRICS_PORT", raising=False)
    monkeypatch.setenv("COURIER_HEALTH_FILE", f'"{health}"')
    assert main() == 0
