"""Credentials stay out of logged URLs."""

from __future__ import annotations

import pytest

from services.redact import redact_url


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://api.test/x?q=1", "https://api.test/x?q=1"),
        ("https://u:p@api.test/x", "https://api.test/x"),
        ("https://api.test/x?token=abc&q=1", "https://api.test/x?token=REDACTED&q=1"),
        ("https://api.test/x?API-Key=abc", "https://api.test/x?API-Key=REDACTED"),
        (
            "https://api.test/x?client_secret=s&sig=t",
            "https://api.test/x?client_secret=REDACTED&sig=REDACTED",
        ),
        ("https://api.test/x#frag", "https://api.test/x"),
    ],
)
def test_redact_url_removes_userinfo_and_secret_params(url, expected):
    assert redact_url(url) == expected
