"""When a failed attempt may be tried again, and how long to wait before it."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

import httpx

from services.errors import parse_retry_after

# RFC 9110 §9.2.2: repeating these has the same effect as sending them once.
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
RETRY_STATUSES = frozenset({429, 502, 503, 504})

# Failures of the network or the host: worth another attempt, and evidence against the host.
RETRY_EXCEPTIONS: tuple[type[httpx.HTTPError], ...] = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.ReadTimeout,
    httpx.WriteTimeout,
    httpx.ReadError,
    httpx.WriteError,
    httpx.RemoteProtocolError,
)
# The connection was never made, so the request never left: safe to repeat whatever the method.
NOT_SENT_EXCEPTIONS: tuple[type[httpx.HTTPError], ...] = (httpx.ConnectError, httpx.ConnectTimeout)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How many times to retry and how to space the attempts."""

    retries: int
    backoff: float
    backoff_max: float
    max_wait: float

    def backoff_for(self, retry: int) -> float:
        """Exponential backoff with full jitter for the `retry`-th retry (1-based)."""
        return random.uniform(0, min(self.backoff_max, self.backoff * 2 ** (retry - 1)))


class Deadline:
    """A point in time a whole call (attempts plus waits) must finish by."""

    __slots__ = ("at", "seconds")

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.at = time.monotonic() + seconds

    def remaining(self) -> float:
        """Seconds left, never negative."""
        return max(0.0, self.at - time.monotonic())


def is_retryable_exception(exc: BaseException, idempotent: bool) -> bool:
    """Whether an attempt that raised `exc` may be tried again."""
    if isinstance(exc, NOT_SENT_EXCEPTIONS):
        return True
    return idempotent and isinstance(exc, RETRY_EXCEPTIONS)


def is_host_failure(exc: BaseException) -> bool:
    """Whether `exc` says the host is unwell (as opposed to our pool, or a bad request)."""
    return isinstance(exc, RETRY_EXCEPTIONS)


def quota_exhausted(response: httpx.Response) -> bool:
    """A GitHub-style `X-RateLimit-Remaining: 0` on a 403 or 429."""
    return response.status_code in (403, 429) and response.headers.get("x-ratelimit-remaining") == "0"


def is_retryable_response(response: httpx.Response) -> bool:
    """Whether the status says a later attempt may succeed."""
    return response.status_code in RETRY_STATUSES or quota_exhausted(response)


def server_wait(response: httpx.Response) -> float | None:
    """How long the server asked us to wait (Retry-After or GitHub's reset), when it said."""
    if response.status_code in RETRY_STATUSES or response.status_code == 403:
        return parse_retry_after(response.headers)
    return None
