"""Typed errors: what they say to users and how Retry-After is read."""

from __future__ import annotations

import email.utils

import httpx
import pytest

from services.errors import (
    ConnectionFailedError,
    TimedOutError,
    UpstreamUnavailableError,
    error_for_exception,
    error_for_response,
    humanize_seconds,
    parse_retry_after,
)

NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Retry-After": "120"}, 120.0),
        ({"Retry-After": email.utils.formatdate(NOW + 90, usegmt=True)}, 90.0),
        ({"Retry-After": "soon"}, None),
        ({"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(int(NOW) + 600)}, 600.0),
        ({"X-RateLimit-Remaining": "5", "X-RateLimit-Reset": str(int(NOW) + 600)}, None),
        ({}, None),
    ],
)
def test_parse_retry_after_reads_seconds_dates_and_github_headers(headers, expected):
    assert parse_retry_after(httpx.Headers(headers), now=NOW) == expected


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.2, "1 second"), (45, "45 seconds"), (60, "1 minute"), (720, "12 minutes"), (7200, "2 hours")],
)
def test_humanize_seconds_reads_naturally(seconds, text):
    assert humanize_seconds(seconds) == text


def test_github_exhausted_quota_403_is_rate_limited():
    request = httpx.Request("GET", "https://api.github.com/repos/a/b")
    response = httpx.Response(
        403, headers={"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "0"}, request=request
    )
    error = error_for_response(response)
    assert error is not None
    assert type(error).__name__ == "UpstreamRateLimitedError"
    assert "api.github.com is rate-limiting us" in error.user_message


def test_transport_failures_become_typed_errors_without_secrets():
    request = httpx.Request("GET", "https://api.test/x?token=secret123")
    timeout = error_for_exception(httpx.ReadTimeout("timed out"), request)
    refused = error_for_exception(httpx.ConnectError("refused"), request)
    assert isinstance(timeout, TimedOutError)
    assert isinstance(timeout, httpx.TimeoutException)
    assert isinstance(refused, ConnectionFailedError)
    assert isinstance(refused, UpstreamUnavailableError)
    assert isinstance(refused, httpx.TransportError)
    for error in (timeout, refused):
        assert "secret123" not in str(error)
        assert error.request is request
