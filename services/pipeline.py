"""One call's steps in the order they run: observe, cache, attempts, breaker and host limits, transmit.

Each step is a method of `Pipeline` that calls the next. The fast path stays flattened: no step wraps
its successor in a closure or middleware object, since each extra coroutine frame costs about 1 us of
CPU per request (benchmarks/no_io.py) on a path whose whole service overhead is about 20 us.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
from loguru import logger

from services import observers
from services.config import HTTPSettings
from services.errors import (
    ClientClosingError,
    DeadlineExceededError,
    HostBusyError,
    deadline_exceeded,
    error_for_exception,
    too_large,
)
from services.origin import noop, origin_of
from services.redact import LazyRedactedURL, redact_url
from services.resilience.breaker import CircuitBreakers, Verdict
from services.resilience.cache import ResponseCache
from services.resilience.ratelimit import HostLimiter, Scope
from services.resilience.retry import (
    IDEMPOTENT_METHODS,
    Deadline,
    RetryPolicy,
    is_host_failure,
    is_retryable_exception,
    is_retryable_response,
    server_wait,
)
from services.state import SharedState, build_state
from services.stats import RequestStats
from services.transport.fast_path import fast_transport_for, send_fast
from services.transport.httpx_glue import read_capped, refuse_declared_size


@dataclass(slots=True)
class CallOptions:
    """The resilience options of one call, resolved against the settings (built once per call).

    Not frozen: a frozen dataclass sets each field through object.__setattr__, which cost 6.3k
    instructions per call here, 2% of a whole small GET.
    """

    retries: int
    deadline: Deadline
    max_bytes: int | None
    cache: bool
    idempotency_key: str | None


@dataclass(frozen=True, slots=True)
class Resilience:
    """The state shared by every call: retry policy, breakers, host limits, the cache, and what is shared."""

    policy: RetryPolicy
    breakers: CircuitBreakers
    limiter: HostLimiter
    cache: ResponseCache
    shared: SharedState

    @classmethod
    def from_settings(cls, s: HTTPSettings) -> Resilience:
        """Build fresh state from `s`: in-process, or shared through Redis when `REDIS_URL` is set."""
        shared = build_state(s)
        return cls(
            RetryPolicy(s.retries, s.retry_backoff, s.retry_backoff_max, s.max_wait),
            CircuitBreakers(s.breaker_threshold, s.breaker_cooldown, peers=shared.peers),
            HostLimiter(s.host_limits, turns=shared.turns, peers=shared.peers),
            ResponseCache(s.cache_max_entries if s.cache else 0, s.cache_max_bytes, tier=shared.cache_tier),
            shared,
        )


def _cause(exc: BaseException, error: BaseException) -> str:
    """What the transport said went wrong, for the log: the typed error names only its kind."""
    detail = str(exc) if exc is not error else ""
    return f" ({detail})" if detail else ""


class CappedStream(httpx.AsyncByteStream):
    """A response stream that raises once `cap` bytes have passed, and frees the host slot on close."""

    def __init__(
        self,
        inner: httpx.AsyncByteStream,
        request: httpx.Request,
        cap: int | None,
        release: Callable[[], None],
    ) -> None:
        self._inner = inner
        self._request = request
        self._cap = cap
        self._release: Callable[[], None] | None = release
        self._seen = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._inner:
            self._seen += len(chunk)
            if self._cap is not None and self._seen > self._cap:
                raise too_large(self._request, self._cap)
            yield chunk

    async def aclose(self) -> None:
        try:
            await self._inner.aclose()
        finally:
            release, self._release = self._release, None
            if release is not None:
                release()


class Pipeline:
    """The steps every call goes through, and the state they keep."""

    def __init__(self, settings: HTTPSettings) -> None:
        self.settings = settings
        self.stats = RequestStats(settings.latency_window)
        self.resilience = r = Resilience.from_settings(settings)
        r.shared.attach(self._mirror_block, r.breakers.mirror, self.summary)

    def _mirror_block(self, scope: Scope, wait: float, path: str) -> None:
        self.resilience.limiter.block(scope, wait, path, announce=False)

    def summary(self) -> dict[str, Any]:
        """This process's figures, as published to the other processes."""
        r, stats = self.resilience, self.stats
        return {
            "requests_total": stats.total,
            "in_flight": stats.in_flight,
            "errors": sum(stats.errors.values()),
            "rate_limited": r.limiter.waits,
            "cache_hits": r.cache.hits,  # shared hits included
            "blocks": len(r.limiter.blocks()),
            "open_circuits": sum(state != "closed" for state in r.breakers.states().values()),
        }

    def call_options(self, options: dict[str, Any]) -> CallOptions:
        """Take the resilience keywords out of `options`, with the settings as defaults."""
        s = self.settings
        if not options:  # the common call: every default, with its own deadline
            return CallOptions(s.retries, Deadline(s.deadline), s.max_response_bytes, s.cache, None)
        return CallOptions(
            retries=options.pop("retries", s.retries),
            deadline=Deadline(options.pop("deadline", s.deadline)),
            max_bytes=options.pop("max_bytes", s.max_response_bytes),
            cache=options.pop("cache", s.cache),
            idempotency_key=options.pop("idempotency_key", None),
        )

    # --- step 1: count, time and log the call ----------------------------------------------------

    async def send(
        self,
        client: httpx.AsyncClient,
        request: httpx.Request,
        send_options: Mapping[str, Any],
        *,
        stream: bool,
        call: CallOptions | None = None,
    ) -> httpx.Response:
        """Run the call through every step; failures come out as Courier's typed errors."""
        call = call or self.call_options({})
        shared = self.resilience.shared
        if shared.needs_start:  # the first call on this loop connects what is shared
            await shared.start()
        stats = self.stats
        stats.started()
        started = time.perf_counter()
        try:
            cache = self.resilience.cache
            if call.cache and not stream and cache.enabled and cache.admits(request):
                response = await self.cached(client, request, send_options, call)
            else:
                response = await self.attempts(client, request, send_options, stream=stream, call=call)
        except httpx.HTTPError as exc:
            elapsed = time.perf_counter() - started
            stats.finished(elapsed, error=type(exc).__name__)
            error = error_for_exception(exc, request)
            if isinstance(error, HostBusyError) and error.shed:
                # The pool warns about shedding once in a while; a line per request would flood.
                logger.debug("{} {} shed: {}", request.method, LazyRedactedURL(request.url), error)
                raise error from exc
            logger.warning(
                "{} {} failed after {:.0f} ms: {}{}",
                request.method,
                redact_url(request.url),
                elapsed * 1000,
                error,
                _cause(exc, error),
            )
            raise error from exc
        except BaseException as exc:
            stats.finished(time.perf_counter() - started, error=type(exc).__name__)
            raise
        elapsed = time.perf_counter() - started
        stats.finished(elapsed, status=response.status_code)
        logger.log(
            "WARNING" if response.status_code >= 500 else "DEBUG",
            "{} {} -> {} in {:.1f} ms",
            request.method,
            LazyRedactedURL(request.url),
            response.status_code,
            elapsed * 1000,
        )
        return response

    # --- step 2: the GET cache (RFC 9111) --------------------------------------------------------

    async def cached(
        self,
        client: httpx.AsyncClient,
        request: httpx.Request,
        send_options: Mapping[str, Any],
        call: CallOptions,
    ) -> httpx.Response:
        """Answer from the cache when fresh, revalidate when stale, store what may be stored."""
        cache = self.resilience.cache
        # The key (the URL as text) is only worth building when there is something to look up or keep.
        tier = cache.tier
        key = cache.key(request) if cache.entries or tier.announced else None
        entry, fresh = cache.lookup(key, request) if key is not None else (None, False)
        if entry is None and key is not None and tier.announced and tier.may_hold(key):
            entry, fresh = await cache.lookup_shared(key, request)  # another process stored it
        if entry is not None and fresh:
            cache.hits += 1
            return cache.response(entry, request, "hit")
        validators = entry is not None and cache.add_validators(request, entry)
        response = await self.attempts(client, request, send_options, stream=False, call=call)
        if key is not None and entry is not None and validators and response.status_code == 304:
            cache.revalidated += 1
            cache.freshen(key, entry, response)
            return cache.response(entry, request, "revalidated")
        cache.misses += 1
        if cache.storable(response):
            key = key or cache.key(request)  # validators come only with a key: still admitted
            if key is not None:
                cache.store(key, request, response)
        return response

    # --- step 3: attempts, spaced by backoff or Retry-After --------------------------------------

    async def attempts(
        self,
        client: httpx.AsyncClient,
        request: httpx.Request,
        send_options: Mapping[str, Any],
        *,
        stream: bool,
        call: CallOptions,
    ) -> httpx.Response:
        """Send up to 1 + `call.retries` attempts, spaced by backoff or by what the server asked."""
        r = self.resilience
        origin = origin_of(request.url)
        idempotent = request.method in IDEMPOTENT_METHODS or call.idempotency_key is not None
        attempt = 0
        while True:
            attempt += 1
            if client.is_closed:  # closed under us between attempts (close() from another loop)
                raise ClientClosingError("the HTTP client was closed before the request could be sent")
            probe = r.breakers.check(origin, request)  # raises CircuitOpenError while open
            try:
                response = await self.attempt(
                    client, request, send_options, stream=stream, call=call, origin=origin, probe=probe
                )
            except httpx.HTTPError as exc:
                wait = r.policy.backoff_for(attempt)
                if (
                    attempt > call.retries
                    or not is_retryable_exception(exc, idempotent)
                    or wait >= call.deadline.remaining()
                ):
                    raise
                reason = type(exc).__name__
            else:
                if attempt > call.retries or not idempotent or not is_retryable_response(response):
                    return response
                asked = server_wait(response)
                if asked is not None and asked > r.policy.max_wait:
                    return response  # fail now, with its retry-after, rather than sleep in a command
                wait = asked if asked is not None else r.policy.backoff_for(attempt)
                if wait >= call.deadline.remaining():
                    return response
                await response.aclose()
                reason = str(response.status_code)
            self.stats.retries += 1
            logger.warning(
                "{} {} -> {}; retry {}/{} in {:.2f}s",
                request.method,
                redact_url(request.url),
                reason,
                attempt,
                call.retries,
                wait,
            )
            await asyncio.sleep(wait)

    # --- step 4: one attempt, under the breaker and the host's limits ----------------------------

    async def attempt(
        self,
        client: httpx.AsyncClient,
        request: httpx.Request,
        send_options: Mapping[str, Any],
        *,
        stream: bool,
        call: CallOptions,
        origin: str,
        probe: bool,
    ) -> httpx.Response:
        """One attempt: wait for the host's turn, send, read the body under the cap; tell the breaker."""
        r = self.resilience
        verdict: Verdict = "neutral"
        try:
            if r.limiter.unlimited(request.url):
                release = noop
            else:
                release = await r.limiter.acquire(request, min(r.policy.max_wait, call.deadline.remaining()))
            sent = time.perf_counter()
            try:
                response = await self.transmit(client, request, send_options, stream=stream, call=call)
            except BaseException as exc:
                release()
                self.sent(request, origin, time.perf_counter() - sent, error=exc)
                raise
            self.sent(request, origin, time.perf_counter() - sent, response=response)
            if stream:
                inner = response.stream
                assert isinstance(inner, httpx.AsyncByteStream)  # an AsyncClient's responses are async
                response.stream = CappedStream(inner, request, call.max_bytes, release)
            else:
                release()
            r.limiter.observe(response)
            verdict = "failure" if response.status_code >= 500 else "success"
            return response
        except BaseException as exc:
            if is_host_failure(exc) or isinstance(exc, DeadlineExceededError):
                verdict = "failure"
            raise
        finally:
            r.breakers.record(origin, verdict, probe)

    def sent(
        self,
        request: httpx.Request,
        origin: str,
        elapsed: float,
        *,
        response: httpx.Response | None = None,
        error: BaseException | None = None,
    ) -> None:
        """Note one request sent (each attempt, each redirect hop): its origin's trend, then observers."""
        failed = response is None or response.status_code >= 500
        self.stats.trends.record(origin, elapsed, failed=failed)
        if observers.OBSERVERS:
            if response is not None:
                observers.observe_final(response, elapsed, origin)
            elif error is not None:
                observers.observe_error(request, error, elapsed, origin)

    # --- step 5: transmit, on Courier's transport or through httpx's own machinery ---------------

    def transmit(
        self,
        client: httpx.AsyncClient,
        request: httpx.Request,
        send_options: Mapping[str, Any],
        *,
        stream: bool,
        call: CallOptions,
    ) -> Awaitable[httpx.Response]:
        """Hand one attempt to the client; the only place a request leaves the service.

        The attempt ends by the call's deadline (`DeadlineExceededError`); a body past `call.max_bytes`
        (declared or as it arrives) raises `ResponseTooLargeError`; without `stream` the body comes back read.
        """
        transport = fast_transport_for(client, request, send_options)
        if transport is not None:  # it bounds each of its waits by the deadline: no timer needed here
            return send_fast(
                client,
                transport,
                request,
                send_options,
                stream=stream,
                max_bytes=call.max_bytes,
                deadline=call.deadline,
            )
        return self._send_stock(client, request, send_options, stream=stream, call=call)

    async def _send_stock(
        self,
        client: httpx.AsyncClient,
        request: httpx.Request,
        send_options: Mapping[str, Any],
        *,
        stream: bool,
        call: CallOptions,
    ) -> httpx.Response:
        """Send through httpx's own machinery, under a timer for the call's deadline."""
        try:
            async with asyncio.timeout(call.deadline.remaining()):
                response = await client.send(request, stream=True, **send_options)
                if observers.OBSERVERS and response.history:  # hops httpx followed on its own
                    for hop in response.history:
                        observers.observe_hop(hop)
                await refuse_declared_size(response, call.max_bytes)
                if not stream:
                    await read_capped(response, call.max_bytes)
                return response
        except TimeoutError:
            raise deadline_exceeded(request, call.deadline.seconds) from None
