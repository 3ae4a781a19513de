"""Logging through loguru, with the stdlib loggers of discord.py, httpx and httpcore routed into it."""

from __future__ import annotations

import inspect
import logging
import sys
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from loguru import logger

if TYPE_CHECKING:
    from loguru import Record

FORMAT = (
    "<green>{time:YYYY-MM-DD HH:mm:ss.SSS}</green> | <level>{level: <8}</level> | "
    "<cyan>{name}</cyan>:<cyan>{function}</cyan>:<cyan>{line}</cyan> - <level>{message}</level>"
)
# httpx logs every request at INFO; the service already logs each one at DEBUG with a redacted URL.
QUIET_LOGGERS = {"httpx": logging.WARNING, "httpcore": logging.WARNING, "hpack": logging.WARNING}
REDACTED = "[redacted]"


class InterceptHandler(logging.Handler):
    """Send stdlib log records to loguru (the recipe from loguru's README)."""

    def emit(self, record: logging.LogRecord) -> None:
        """Forward one record, keeping its level and the caller's location."""
        level: str | int
        try:
            level = logger.level(record.levelname).name
        except ValueError:
            level = record.levelno
        frame, depth = inspect.currentframe(), 0
        while frame is not None and (depth == 0 or frame.f_code.co_filename == logging.__file__):
            frame = frame.f_back
            depth += 1
        logger.opt(depth=depth, exception=record.exc_info).log(level, record.getMessage())


def secret_scrubber(secrets: Iterable[str]) -> Callable[[Record], None]:
    """A loguru patcher that replaces any of `secrets` in a message with a placeholder."""
    values = tuple(s for s in secrets if s)

    def scrub(record: Record) -> None:
        message = record["message"]
        for secret in values:
            if secret in message:
                message = message.replace(secret, REDACTED)
        record["message"] = message

    return scrub


def setup_logging(level: str = "INFO", *, secrets: Iterable[str] = ()) -> None:
    """Log to stderr through loguru only; tracebacks never show local variables (they hold tokens)."""
    logger.remove()
    logger.configure(patcher=secret_scrubber(secrets))
    logger.add(sys.stderr, level=level, format=FORMAT, backtrace=False, diagnose=False)
    logging.basicConfig(handlers=[InterceptHandler()], level=0, force=True)
    for name, floor in QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(max(floor, logger.level(level).no))
    logging.getLogger("discord").setLevel(logger.level(level).no)
