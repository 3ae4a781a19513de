"""Logging: stdlib loggers land in loguru, secrets and local variables never reach the output."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator

import pytest
from loguru import logger

from bot.logging import REDACTED, setup_logging

TOKEN = "MTIz.NDU2.Nzg5-very-secret"


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    logger.remove()
    logger.configure(patcher=lambda record: None)
    logger.add(sys.stderr)
    root.handlers[:] = handlers
    root.setLevel(level)
    for name in ("discord", "httpx", "httpcore", "hpack"):
        logging.getLogger(name).setLevel(logging.NOTSET)


def test_stdlib_records_reach_loguru_with_level_and_braces(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("INFO")
    logging.getLogger("discord.gateway").warning("shard %s said {hello}", 0)
    err = capsys.readouterr().err
    assert "WARNING" in err and "shard 0 said {hello}" in err


def test_httpx_request_lines_are_quiet_but_its_warnings_pass(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("DEBUG")
    logging.getLogger("httpx").info("HTTP Request: GET https://example.org")
    logging.getLogger("httpx").warning("something odd")
    err = capsys.readouterr().err
    assert "HTTP Request" not in err and "something odd" in err


def test_level_filters_lower_records(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("WARNING")
    logger.info("chatty")
    logging.getLogger("discord.client").info("also chatty")
    logger.warning("important")
    err = capsys.readouterr().err
    assert "chatty" not in err and "important" in err


def test_token_is_scrubbed_from_every_message(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("INFO", secrets=[TOKEN])
    logger.info("logging in with {}", TOKEN)
    logging.getLogger("discord.http").warning("header Authorization: Bot %s", TOKEN)
    err = capsys.readouterr().err
    assert TOKEN not in err and err.count(REDACTED) == 2


def test_tracebacks_show_no_local_variables(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("INFO")

    def login(token: str) -> None:
        secret_copy = token.upper()
        raise RuntimeError(f"failed after {len(secret_copy)} chars")

    try:
        login(TOKEN)
    except RuntimeError:
        logger.exception("login failed")
    err = capsys.readouterr().err
    assert "Traceback" in err and "RuntimeError" in err
    assert TOKEN not in err and TOKEN.upper() not in err
