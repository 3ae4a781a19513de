"""Tests for embed truncation within Discord's limits."""

from __future__ import annotations

from cogs._embeds import TOTAL_LIMIT, make_embed, truncate
from cogs._replies import error_message
from services.errors import ClientClosingError


def test_truncate_keeps_short_text() -> None:
    assert truncate("abc", 10) == "abc"


def test_truncate_cuts_with_ellipsis_within_limit() -> None:
    out = truncate("word " * 100, 50)
    assert len(out) <= 50 and out.endswith("…")


def test_make_embed_stays_within_every_limit() -> None:
    embed = make_embed(
        title="t" * 1000,
        description="d" * 10000,
        fields=[("n" * 500, "v" * 5000)] * 40,
        footer="f" * 5000,
    )
    assert len(embed.title or "") <= 256
    assert len(embed.description or "") <= 4096
    assert len(embed.fields) <= 25
    assert all(len(f.value or "") <= 1024 and len(f.name or "") <= 256 for f in embed.fields)
    assert len(embed) <= TOTAL_LIMIT


def test_error_message_during_shutdown_says_so() -> None:
    assert "shutting down" in error_message(ClientClosingError("closing"), "PyPI", "No such package.")
