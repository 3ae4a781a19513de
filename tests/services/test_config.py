"""Validation of the HTTP client's settings."""

from __future__ import annotations

import pytest

from services.config import HTTPSettings, SettingsError


def test_http_settings_defaults_suit_public_apis():
    settings = HTTPSettings.from_env({})
    assert settings.max_connections == 100
    assert settings.max_keepalive_connections == 20
    assert settings.connect_timeout == 10
    assert settings.read_timeout == 30
    # HTTP/2 only through httpcore, at ~4x the CPU per request of the fast HTTP/1.1 transport: opt-in.
    assert settings.http2 is False
    assert settings.effective_user_agent.startswith("Courier/")


def test_http_settings_read_every_key():
    settings = HTTPSettings.from_env(
        {
            "HTTP_MAX_CONNECTIONS": "50",
            "HTTP_MAX_KEEPALIVE_CONNECTIONS": "5",
            "HTTP_KEEPALIVE_EXPIRY": "2.5",
            "HTTP_CONNECT_TIMEOUT": "3",
            "HTTP_READ_TIMEOUT": "4",
            "HTTP_WRITE_TIMEOUT": "5",
            "HTTP_POOL_TIMEOUT": "6",
            "HTTP_HTTP2": "on",
            "HTTP_FOLLOW_REDIRECTS": "no",
            "HTTP_VERIFY_TLS": "false",
            "HTTP_USER_AGENT": "Bot/1",
            "HTTP_MAX_REDIRECTS": "3",
        }
    )
    assert (settings.max_connections, settings.max_keepalive_connections) == (50, 5)
    assert (settings.keepalive_expiry, settings.connect_timeout, settings.read_timeout) == (2.5, 3, 4)
    assert (settings.write_timeout, settings.pool_timeout) == (5, 6)
    assert settings.http2 and not settings.follow_redirects and not settings.verify_tls
    assert settings.effective_user_agent == "Bot/1"
    assert settings.max_redirects == 3


def test_http_settings_blank_values_fall_back_to_defaults():
    assert HTTPSettings.from_env({"HTTP_READ_TIMEOUT": "  "}).read_timeout == 30


def test_http_settings_keepalive_default_follows_small_connection_limit():
    assert HTTPSettings.from_env({"HTTP_MAX_CONNECTIONS": "4"}).max_keepalive_connections == 4


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("HTTP_MAX_CONNECTIONS", "lots", "whole number"),
        ("HTTP_MAX_CONNECTIONS", "0", "at least 1"),
        ("HTTP_READ_TIMEOUT", "-1", "at least"),
        ("HTTP_READ_TIMEOUT", "nan", "finite"),
        ("HTTP_CONNECT_TIMEOUT", "10s", "number"),
        ("HTTP_HTTP2", "maybe", "true or false"),
        ("HTTP_KEEPALIVE_EXPIRY", "1e9", "at most"),
        ("HTTP_CA_BUNDLE", "/no/such/file.pem", "readable file"),
    ],
)
def test_http_settings_error_names_key_and_value(key, value, expected):
    with pytest.raises(SettingsError) as caught:
        HTTPSettings.from_env({key: value})
    message = str(caught.value)
    assert message.startswith(f"{key}={value!r}")
    assert expected in message
    assert caught.value.key == key


def test_http_settings_keepalive_above_max_is_rejected():
    with pytest.raises(SettingsError, match="HTTP_MAX_KEEPALIVE_CONNECTIONS='30'"):
        HTTPSettings.from_env({"HTTP_MAX_CONNECTIONS": "10", "HTTP_MAX_KEEPALIVE_CONNECTIONS": "30"})


def test_settings_error_hides_secret_values():
    error = SettingsError("DISCORD_TOKEN", "abc.def.ghi", "a bot token", secret=True)
    assert "abc.def.ghi" not in str(error)


def test_http_settings_resilience_defaults():
    settings = HTTPSettings.from_env({})
    assert settings.retries == 2
    assert settings.max_response_bytes == 5 * 1024 * 1024
    assert settings.cache is True
    assert [(h.host, h.requests, h.period) for h in settings.host_limits] == [("crates.io", 1, 1.0)]


def test_http_settings_read_resilience_keys():
    settings = HTTPSettings.from_env(
        {
            "HTTP_RETRIES": "4",
            "HTTP_RETRY_BACKOFF": "0.1",
            "HTTP_RETRY_BACKOFF_MAX": "2",
            "HTTP_MAX_WAIT": "9",
            "HTTP_DEADLINE": "12",
            "HTTP_BREAKER_THRESHOLD": "3",
            "HTTP_BREAKER_COOLDOWN": "7",
            "HTTP_HOST_LIMITS": "crates.io=2/s, API.github.com=60/h*4, example.org=*1",
            "HTTP_MAX_RESPONSE_BYTES": "65536",
            "HTTP_CACHE": "off",
            "HTTP_CACHE_MAX_ENTRIES": "10",
            "HTTP_CACHE_MAX_BYTES": "1000",
            "HTTP_DRAIN_TIMEOUT": "3",
        }
    )
    assert (settings.retries, settings.retry_backoff, settings.retry_backoff_max) == (4, 0.1, 2)
    assert (settings.max_wait, settings.deadline) == (9, 12)
    assert (settings.breaker_threshold, settings.breaker_cooldown) == (3, 7)
    assert [(h.host, h.requests, h.period, h.concurrency) for h in settings.host_limits] == [
        ("crates.io", 2, 1.0, 0),
        ("api.github.com", 60, 3600.0, 4),
        ("example.org", 0, 1.0, 1),
    ]
    assert settings.max_response_bytes == 65536
    assert not settings.cache
    assert (settings.cache_max_entries, settings.cache_max_bytes, settings.drain_timeout) == (10, 1000, 3)


def test_http_settings_host_limit_matches_subdomains_only():
    (limit,) = HTTPSettings.from_env({"HTTP_HOST_LIMITS": "crates.io=1/s"}).host_limits
    assert limit.matches("crates.io") and limit.matches("static.crates.io")
    assert not limit.matches("notcrates.io")


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("HTTP_RETRIES", "-1", "at least 0"),
        ("HTTP_RETRIES", "many", "whole number"),
        ("HTTP_DEADLINE", "0", "at least"),
        ("HTTP_MAX_WAIT", "inf", "finite"),
        ("HTTP_MAX_RESPONSE_BYTES", "10", "at least 1024"),
        ("HTTP_CACHE", "sometimes", "true or false"),
        ("HTTP_HOST_LIMITS", "crates.io=1/day", "host=COUNT/UNIT"),
        ("HTTP_HOST_LIMITS", "crates.io", "host=COUNT/UNIT"),
        ("HTTP_HOST_LIMITS", "crates.io=x/s", "host=COUNT/UNIT"),
        ("HTTP_HOST_LIMITS", "bad host=1/s", "host=COUNT/UNIT"),
    ],
)
def test_http_settings_resilience_error_names_key_and_value(key, value, expected):
    with pytest.raises(SettingsError) as caught:
        HTTPSettings.from_env({key: value})
    assert str(caught.value).startswith(f"{key}={value!r}")
    assert expected in str(caught.value)


def test_http_settings_transport_choice_and_per_host_cap():
    assert HTTPSettings().transport == "auto"
    assert HTTPSettings().max_connections_per_host == 0
    settings = HTTPSettings.from_env({"HTTP_TRANSPORT": " HTTPCore ", "HTTP_MAX_CONNECTIONS_PER_HOST": "8"})
    assert settings.transport == "httpcore"
    assert settings.max_connections_per_host == 8
    with pytest.raises(
        SettingsError, match="HTTP_TRANSPORT='h3' is invalid: expected one of auto, fast, httpcore"
    ):
        HTTPSettings.from_env({"HTTP_TRANSPORT": "h3"})


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('"45"', 45.0),
        ("'45'", 45.0),
        (' " 45 " ', 45.0),
        ('""', 30.0),
        ("''", 30.0),
        ('"', None),
        ("'45\"", None),
    ],
)
def test_http_settings_strip_matching_quotes(value, expected):
    env = {"HTTP_READ_TIMEOUT": value}
    if expected is None:
        with pytest.raises(SettingsError, match="HTTP_READ_TIMEOUT"):
            HTTPSettings.from_env(env)
    else:
        assert HTTPSettings.from_env(env).read_timeout == expected


def test_http_settings_quoted_strings_and_booleans():
    s = HTTPSettings.from_env(
        {"HTTP_HTTP2": "'true'", "HTTP_USER_AGENT": '"Bot/1.0 (+x)"', "HTTP_TRANSPORT": '"fast"'}
    )
    assert s.http2 and s.user_agent == "Bot/1.0 (+x)" and s.transport == "fast"


def test_http_settings_report_every_bad_key_in_one_error():
    env = {
        "HTTP_RETRIES": "lots",
        "HTTP_HTTP2": "maybe",
        "HTTP_TRANSPORT": "warp",
        "HTTP_HOST_LIMITS": "crates.io=fast",
        "HTTP_MAX_CONNECTIONS": "5",
        "HTTP_MAX_KEEPALIVE_CONNECTIONS": "9",  # checked across keys, after the rest
    }
    with pytest.raises(SettingsError) as info:
        HTTPSettings.from_env(env)
    keys = [error.key for error in info.value.errors]
    assert set(keys) == {"HTTP_HTTP2", "HTTP_RETRIES", "HTTP_HOST_LIMITS", "HTTP_TRANSPORT"} | {keys[-1]}
    assert keys[-1] == "HTTP_MAX_KEEPALIVE_CONNECTIONS"
    assert str(info.value).startswith("5 settings are invalid: ")


def test_http_settings_one_bad_key_keeps_its_own_message():
    with pytest.raises(SettingsError) as info:
        HTTPSettings.from_env({"HTTP_RETRIES": "lots"})
    assert str(info.value) == "HTTP_RETRIES='lots' is invalid: expected whole number"
