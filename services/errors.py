"""The typed errors the shared client raises; cogs catch these, users read `user_message`."""

from __future__ import annotations

import email.utils
import math
import time

import httpx

from services.redact import redact_url


def _host(request: httpx.Request | None) -> str:
    return request.url.host if request is not None and request.url.host else "the service"


class CourierHTTPError(httpx.HTTPError):
    """Base of every error the shared client raises; its text never holds a secret."""

    default_message = "Something went wrong talking to {host}."

    def __init__(self, message: str, *, request: httpx.Request | None = None) -> None:
        # Not super(): the httpx bases in our subclasses' MROs take different arguments.
        httpx.HTTPError.__init__(self, message)
        self._request = request

    @property
    def host(self) -> str:
        """The host the failed request went to, for messages."""
        return _host(self._request)

    @property
    def user_message(self) -> str:
        """A short sentence fit to show a Discord user."""
        return self.default_message.format(host=self.host)


class StatusError(CourierHTTPError, httpx.HTTPStatusError):
    """The upstream answered with a 4xx or 5xx status."""

    default_message = "{host} could not answer that request."

    def __init__(self, message: str, *, request: httpx.Request, response: httpx.Response) -> None:
        CourierHTTPError.__init__(self, message, request=request)
        self.response = response

    @property
    def status_code(self) -> int:
        """The HTTP status the upstream answered with."""
        return self.response.status_code


class NotFoundError(StatusError):
    """404 or 410: what was asked for does not exist."""

    default_message = "{host} has nothing by that name."


class ClientError(StatusError):
    """Any other 4xx: the request was wrong, the host is fine."""

    default_message = "{host} refused that request."


class RateLimitedError(CourierHTTPError):
    """The upstream (or our own limit for it) says to wait; `retry_after` is in seconds when known."""

    def __init__(
        self,
        message: str,
        *,
        request: httpx.Request | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, request=request)
        self.retry_after = retry_after

    @property
    def user_message(self) -> str:
        """Say how long to wait, in words a person reads at a glance."""
        if self.retry_after is None:
            return f"{self.host} is rate-limiting us; try again in a little while."
        return f"{self.host} is rate-limiting us; try again in {humanize_seconds(self.retry_after)}."


class UpstreamRateLimitedError(RateLimitedError, StatusError):
    """The upstream answered 429 (or 403 with an exhausted GitHub-style quota)."""

    def __init__(
        self,
        message: str,
        *,
        request: httpx.Request,
        response: httpx.Response,
        retry_after: float | None = None,
    ) -> None:
        StatusError.__init__(self, message, request=request, response=response)
        self.retry_after = retry_after


class UpstreamUnavailableError(CourierHTTPError):
    """The upstream is down, failing, or unreachable."""

    default_message = "{host} is unavailable right now; please try again later."


class CircuitOpenError(UpstreamUnavailableError):
    """Recent requests to this host kept failing, so we stopped sending more for a while."""

    def __init__(
        self, message: str, *, request: httpx.Request | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message, request=request)
        self.retry_after = retry_after


class ClientClosingError(CourierHTTPError):
    """The shared client is shutting down and takes no new requests."""

    default_message = "The bot is shutting down; please try again in a moment."


class ServerError(UpstreamUnavailableError, StatusError):
    """The upstream answered with a 5xx status."""

    def __init__(self, message: str, *, request: httpx.Request, response: httpx.Response) -> None:
        StatusError.__init__(self, message, request=request, response=response)


class ConnectionFailedError(UpstreamUnavailableError, httpx.TransportError):
    """The connection could not be made or broke before an answer came."""


class TimedOutError(CourierHTTPError, httpx.TimeoutException):
    """The upstream took longer than the timeout allowed."""

    default_message = "{host} took too long to answer; please try again later."


class DeadlineExceededError(TimedOutError):
    """The call's total deadline ran out across its attempts and waits."""


class HostBusyError(TimedOutError, httpx.PoolTimeout):
    """The host's share of the pool is taken and its queue would not clear in time; nothing was sent.

    A `PoolTimeout` (and a `TimedOutError`), so code that handles those handles this too; it comes at
    once when the wait is already known to be too long, instead of after the pool timeout.
    """

    default_message = "{host} is slow right now; please try again in a minute."

    def __init__(self, message: str, *, request: httpx.Request | None = None, shed: bool = False) -> None:
        super().__init__(message, request=request)
        self.shed = shed


class ResponseTooLargeError(CourierHTTPError):
    """The body passed the size cap; the transfer was aborted."""

    default_message = "{host} sent more data than we accept."


def deadline_exceeded(request: httpx.Request, seconds: float) -> DeadlineExceededError:
    """The error for a call to `request` that ran past its `seconds`-long deadline."""
    return DeadlineExceededError(
        f"{request.method} {redact_url(request.url)} ran past its {seconds:g}s deadline", request=request
    )


def host_busy(request: httpx.Request, waited: float | None) -> HostBusyError:
    """The error for a request to `request`'s host that got no slot (`waited` None: turned away at once)."""
    where = f"{request.method} {redact_url(request.url)}"
    if waited is None:
        return HostBusyError(
            f"{where} shed: its host's queue would not clear in time", request=request, shed=True
        )
    return HostBusyError(f"{where} got no connection within {waited:.3g}s", request=request)


def too_large(request: httpx.Request, cap: int) -> ResponseTooLargeError:
    """The error for a response to `request` that passed `cap` bytes."""
    return ResponseTooLargeError(
        f"response to {request.method} {redact_url(request.url)} passed the {cap}-byte cap", request=request
    )


class BadResponseError(CourierHTTPError):
    """The body was not valid JSON, or not of the expected shape."""

    default_message = "{host} sent an answer we could not understand."


def humanize_seconds(seconds: float) -> str:
    """Render a wait as '12 seconds', '3 minutes', '2 hours'."""
    seconds = max(1, math.ceil(seconds))
    for unit, size in (("hour", 3600), ("minute", 60)):
        if seconds >= size:
            count = math.ceil(seconds / size)
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return f"{seconds} second{'s' if seconds != 1 else ''}"


def parse_retry_after(headers: httpx.Headers, now: float | None = None) -> float | None:
    """Seconds to wait from `Retry-After` (seconds or HTTP-date) or GitHub's rate-limit headers."""
    now = time.time() if now is None else now
    value = headers.get("retry-after")
    if value is not None:
        value = value.strip()
        if value.isdigit():
            return float(value)
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            when = None
        if when is not None and when.tzinfo is not None:
            return max(0.0, when.timestamp() - now)
    if headers.get("x-ratelimit-remaining") == "0":
        reset = headers.get("x-ratelimit-reset", "")
        if reset.isdigit():
            return max(0.0, float(reset) - now)
    return None


def error_for_response(response: httpx.Response) -> StatusError | None:
    """The typed error a 4xx/5xx response stands for, or None for any other status."""
    status = response.status_code
    if status < 400:
        return None
    request = response.request
    message = f"{status} {response.reason_phrase} from {request.method} {redact_url(request.url)}"
    if status == 429 or (status == 403 and response.headers.get("x-ratelimit-remaining") == "0"):
        return UpstreamRateLimitedError(
            message,
            request=request,
            response=response,
            retry_after=parse_retry_after(response.headers),
        )
    if status in (404, 410):
        return NotFoundError(message, request=request, response=response)
    if status >= 500:
        return ServerError(message, request=request, response=response)
    return ClientError(message, request=request, response=response)


def error_for_exception(exc: httpx.HTTPError, request: httpx.Request) -> CourierHTTPError:
    """Translate a raw httpx failure into the typed error, with a message free of secrets."""
    if isinstance(exc, CourierHTTPError):
        return exc
    where = f"{request.method} {redact_url(request.url)}"
    kind = type(exc).__name__
    if isinstance(exc, httpx.TimeoutException):
        return TimedOutError(f"{kind} on {where}", request=request)
    if isinstance(exc, httpx.TooManyRedirects):
        return BadResponseError(f"too many redirects on {where}", request=request)
    if isinstance(exc, httpx.TransportError):
        return ConnectionFailedError(f"{kind} on {where}", request=request)
    return CourierHTTPError(f"{kind} on {where}", request=request)
