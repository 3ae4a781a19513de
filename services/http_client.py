"""The shared HTTP client: one pooled `httpx.AsyncClient` per process, observable and safe to share."""

from __future__ import annotations

import asyncio
import ssl
import threading
import weakref
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypedDict, Unpack

import httpx
from loguru import logger

from services.config import HTTPSettings
from services.errors import BadResponseError, ClientClosingError, error_for_response
from services.pipeline import CallOptions, Pipeline, Resilience
from services.redact import redact_url
from services.state import SharedState
from services.stats import PoolStats, RequestStats, merge_pool_states, summarize_origins
from services.transport.config import build_ssl_context, transport_mode, transport_options
from services.transport.httpx_glue import build_request_fast
from services.transport.inspect import read_pool_state, transport_name

if TYPE_CHECKING:
    from services.transport.httpx_glue import (
        AuthTypes,
        CookieTypes,
        HeaderTypes,
        QueryParamTypes,
        RequestContent,
        RequestData,
        RequestExtensions,
        RequestFiles,
        TimeoutTypes,
        UseClientDefault,
    )


class RequestOptions(TypedDict, total=False):
    """The keyword arguments every verb accepts: httpx's own, plus `raise_for_status`."""

    params: QueryParamTypes | None
    headers: HeaderTypes | None
    cookies: CookieTypes | None
    content: RequestContent | None
    data: RequestData | None
    files: RequestFiles | None
    json: Any
    auth: AuthTypes | UseClientDefault | None
    follow_redirects: bool | UseClientDefault
    timeout: TimeoutTypes | UseClientDefault
    extensions: RequestExtensions | None
    raise_for_status: bool
    retries: int
    deadline: float
    max_bytes: int | None
    cache: bool
    idempotency_key: str


_SEND_OPTIONS = ("auth", "follow_redirects")
# Origins whose last hour a snapshot carries (the busiest).
MAX_TRENDS = 5


def _settle(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _close_soon(shared: SharedState) -> None:
    """Release replaced shared state: at once on a running loop, else it ends with its own loop."""
    if shared.needs_start:
        return  # never started: nothing to release
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return
    task = loop.create_task(shared.close(), name="courier-state-close")
    _CLOSING.add(task)
    task.add_done_callback(_CLOSING.discard)


_CLOSING: set[asyncio.Task[None]] = set()


@dataclass(slots=True)
class _LoopClient:
    """The client serving one event loop, and the task that closes it when that loop ends."""

    client: httpx.AsyncClient
    watcher: asyncio.Task[None]


class HTTPClient:
    """Lazily builds, shares, observes and closes the process's `httpx.AsyncClient`.

    A client is tied to the loop that opened its connections, so there is one per live event loop:
    in a bot that is exactly one per process. Another thread running its own loop gets its own,
    rather than stealing (and breaking) the first one mid-request.
    """

    def __init__(self, settings: HTTPSettings | None = None) -> None:
        self._settings = settings
        self._ssl_context: ssl.SSLContext | None = None
        # Guards the fields below: the service may be reached from more than one thread.
        self._guard = threading.Lock()
        self._clients: dict[asyncio.AbstractEventLoop, _LoopClient] = {}
        # One asyncio.Lock per loop: a lock binds to the first loop that contends on it.
        self._locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
            weakref.WeakKeyDictionary()
        )
        self._pipeline: Pipeline | None = None
        self._closing = False
        # Tasks inside a request or stream (with nesting depth), so close() can drain them.
        self._active: dict[asyncio.Task[Any], int] = {}
        self._drained: set[asyncio.Task[Any]] = set()
        self._drain_waiter: asyncio.Future[None] | None = None

    @property
    def settings(self) -> HTTPSettings:
        """The settings in force, read from the environment on first need."""
        if self._settings is None:
            self._settings = HTTPSettings.from_env()
        return self._settings

    @property
    def pipeline(self) -> Pipeline:
        """The steps every call goes through and the state they keep, built on first need."""
        if self._pipeline is None:
            self._pipeline = Pipeline(self.settings)
        return self._pipeline

    @property
    def stats(self) -> RequestStats:
        """The request counters this service keeps."""
        return self.pipeline.stats

    @property
    def resilience(self) -> Resilience:
        """Retry policy, breakers, host limits and cache."""
        return self.pipeline.resilience

    @property
    def closing(self) -> bool:
        """Whether `close()` is under way (new requests are refused)."""
        return self._closing

    def configure(self, settings: HTTPSettings) -> None:
        """Use `settings` for every client built from now on (the bot calls this at start)."""
        with self._guard:
            old, self._pipeline = self._pipeline, None
            self._settings = settings
            self._ssl_context = None
        if old is not None:
            _close_soon(old.resilience.shared)

    @property
    def ssl_context(self) -> ssl.SSLContext:
        """The TLS context shared by every client this service builds."""
        if self._ssl_context is None:
            self._ssl_context = build_ssl_context(self.settings)
        return self._ssl_context

    def client_options(self) -> dict[str, Any]:
        """Keyword arguments for `httpx.AsyncClient` derived from the settings."""
        s = self.settings
        return {
            "verify": self.ssl_context,
            "http2": s.http2,
            "limits": httpx.Limits(
                max_connections=s.max_connections,
                max_keepalive_connections=s.max_keepalive_connections,
                keepalive_expiry=s.keepalive_expiry,
            ),
            "timeout": httpx.Timeout(
                connect=s.connect_timeout,
                read=s.read_timeout,
                write=s.write_timeout,
                pool=s.pool_timeout,
            ),
            "headers": {"User-Agent": s.effective_user_agent},
            "follow_redirects": s.follow_redirects,
            "max_redirects": s.max_redirects,
            "trust_env": s.trust_env,
        }

    def _build_client(self) -> httpx.AsyncClient:
        s = self.settings
        # With transport= httpx ignores limits/http2/verify for it; they still shape proxy mounts.
        client = httpx.AsyncClient(**self.client_options(), **transport_options(s, self.ssl_context))
        logger.info(
            "HTTP client ready: transport={} http2={} max_connections={} keepalive={} timeouts={}/{}s",
            transport_mode(s),
            s.http2,
            s.max_connections,
            s.max_keepalive_connections,
            s.connect_timeout,
            s.read_timeout,
        )
        return client

    def _lock_for(self, loop: asyncio.AbstractEventLoop) -> asyncio.Lock:
        with self._guard:
            lock = self._locks.get(loop)
            if lock is None:
                lock = self._locks[loop] = asyncio.Lock()
            return lock

    def _live_client(self, loop: asyncio.AbstractEventLoop) -> httpx.AsyncClient | None:
        entry = self._clients.get(loop)
        if entry is not None and not entry.client.is_closed:
            return entry.client
        return None

    def _live_clients(self) -> list[httpx.AsyncClient]:
        with self._guard:
            return [e.client for e in self._clients.values() if not e.client.is_closed]

    async def get_client(self) -> httpx.AsyncClient:
        """Return the live client for the running loop, building it on first use."""
        loop = asyncio.get_running_loop()
        client = self._live_client(loop)
        if client is not None:
            return client
        async with self._lock_for(loop):
            client = self._live_client(loop)
            if client is not None:
                return client
            self._forget_dead_loops()
            client = self._build_client()
            watcher = loop.create_task(self._close_when_loop_ends(client), name="http-client-watcher")
            with self._guard:
                self._clients[loop] = _LoopClient(client, watcher)
        return client

    def _forget_dead_loops(self) -> None:
        """Drop clients whose loop was closed without tearing them down (no asyncio.run)."""
        with self._guard:
            dead = [loop for loop in self._clients if loop.is_closed()]
            for loop in dead:
                del self._clients[loop]
        if dead:
            logger.warning(
                "{} HTTP client(s) outlived their event loop; their sockets were left to the "
                "garbage collector",
                len(dead),
            )

    async def _close_when_loop_ends(self, client: httpx.AsyncClient) -> None:
        """Close `client` when its loop shuts down (asyncio.run cancels every task at the end)."""
        loop = asyncio.get_running_loop()
        try:
            await loop.create_future()
        except asyncio.CancelledError:
            with self._guard:
                entry = self._clients.get(loop)
                if entry is not None and entry.client is client:
                    del self._clients[loop]
            await client.aclose()
            raise

    async def close(self) -> None:
        """Drain, then close every pool; safe to call twice or before first use. The next use builds anew.

        New requests fail with `ClientClosingError` while closing; requests in flight on this loop get
        up to `HTTP_DRAIN_TIMEOUT` seconds to finish, then are cancelled (and raise that error too).
        """
        self._closing = True
        try:
            await self._drain(asyncio.get_running_loop())
            await self._close_clients()
            if self._pipeline is not None:
                await self._pipeline.resilience.shared.close()
        finally:
            with self._guard:
                self._closing = False
                self._drained.clear()

    def _in_flight_on(self, loop: asyncio.AbstractEventLoop) -> list[asyncio.Task[Any]]:
        current = asyncio.current_task()
        with self._guard:
            return [t for t in self._active if t is not current and not t.done() and t.get_loop() is loop]

    async def _drain(self, loop: asyncio.AbstractEventLoop) -> None:
        timeout = self.settings.drain_timeout
        tasks = await self._wait_idle(loop, timeout)
        if not tasks:
            return
        logger.warning("{} HTTP request(s) still in flight after {}s; cancelling them", len(tasks), timeout)
        for task in tasks:
            self._drained.add(task)
            task.cancel()
        # They unwind at their next await; give them a moment, bounded, before closing under them.
        await self._wait_idle(loop, 1.0)

    async def _wait_idle(self, loop: asyncio.AbstractEventLoop, seconds: float) -> list[asyncio.Task[Any]]:
        """Wait up to `seconds` for this loop's requests to finish; return those still running."""
        if not self._in_flight_on(loop):
            return []
        waiter = self._drain_waiter = loop.create_future()
        try:
            await asyncio.wait({waiter}, timeout=seconds)
        finally:
            self._drain_waiter = None
        return self._in_flight_on(loop)

    def _admit(self) -> asyncio.Task[Any] | None:
        if self._closing:
            raise ClientClosingError("the HTTP client is shutting down and takes no new requests")
        task = asyncio.current_task()
        if task is not None:
            with self._guard:
                self._active[task] = self._active.get(task, 0) + 1
        return task

    def _leave(self, task: asyncio.Task[Any] | None) -> None:
        if task is None:
            return
        with self._guard:
            depth = self._active.pop(task, 1) - 1
            if depth > 0:
                self._active[task] = depth
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done() and not self._in_flight_on(waiter.get_loop()):
            waiter.get_loop().call_soon_threadsafe(_settle, waiter)

    def _raise_if_drained(self, task: asyncio.Task[Any] | None) -> None:
        """Turn the drain's own cancellation into a typed error; leave any other cancellation alone."""
        if task is None or task not in self._drained:
            return
        self._drained.discard(task)
        if task.uncancel() == 0:
            raise ClientClosingError("request cancelled: the HTTP client shut down before it finished")

    async def _close_clients(self) -> None:
        with self._guard:
            entries = list(self._clients.items())
            self._clients.clear()
        current = asyncio.get_running_loop()
        for loop, entry in entries:
            if loop is current:
                await entry.client.aclose()
                entry.watcher.cancel()
                # A cancelled task ends on a later loop turn; close() waits for it so that it leaves
                # no task of ours running. wait() doesn't raise the watcher's CancelledError into us.
                await asyncio.wait({entry.watcher})
            elif loop.is_running():  # another thread's loop owns those sockets
                asyncio.run_coroutine_threadsafe(entry.client.aclose(), loop)
                loop.call_soon_threadsafe(entry.watcher.cancel)
            elif not loop.is_closed():
                logger.warning("an HTTP client's event loop is stopped; it will close with that loop")
                with self._guard:
                    self._clients.setdefault(loop, entry)

    async def request(
        self, method: str, url: httpx.URL | str, **options: Unpack[RequestOptions]
    ) -> httpx.Response:
        """Send a request and read its body; 4xx/5xx raise a typed `httpx.HTTPStatusError`.

        Args:
            method: The HTTP method.
            url: An absolute URL.
            **options: httpx's request keywords (params, json, headers, timeout, ...);
                `raise_for_status=False` to get error responses back instead of an exception;
                `retries=`, `deadline=` (seconds for all attempts and waits), `max_bytes=` (None: no cap),
                `cache=False` to bypass the HTTP cache, `idempotency_key=` to let a POST/PATCH be
                retried (sent as `Idempotency-Key`).
        """
        raise_for_status = options.pop("raise_for_status", True)
        call = self.pipeline.call_options(options)  # type: ignore[arg-type]
        task = self._admit()
        try:
            response = await self._open(method, url, options, call, task, stream=False)
        except asyncio.CancelledError:
            self._raise_if_drained(task)
            raise
        finally:
            self._leave(task)
        if raise_for_status and (error := error_for_response(response)) is not None:
            raise error
        return response

    async def _open(
        self,
        method: str,
        url: httpx.URL | str,
        options: RequestOptions,
        call: CallOptions,
        task: asyncio.Task[Any] | None,
        *,
        stream: bool,
    ) -> httpx.Response:
        """Build the request on the running loop's client and send it, body read unless `stream`."""
        # The task knows its loop; get_running_loop() costs a getpid() system call on Python 3.11.
        loop = task.get_loop() if task is not None else asyncio.get_running_loop()
        client = self._live_client(loop) or await self.get_client()
        request, send_options = self._build_request(client, method, url, options)
        if call.idempotency_key is not None:
            request.headers["Idempotency-Key"] = call.idempotency_key
        return await self.pipeline.send(client, request, send_options, stream=stream, call=call)

    def _build_request(
        self,
        client: httpx.AsyncClient,
        method: str,
        url: httpx.URL | str,
        options: RequestOptions,
    ) -> tuple[httpx.Request, dict[str, Any]]:
        build: dict[str, Any] = dict(options)
        send = {key: build.pop(key) for key in _SEND_OPTIONS if key in build} if build else {}
        request = build_request_fast(client, method, url, build)
        if request is None:
            request = client.build_request(method, url, **build)
        return request, send

    async def get(self, url: httpx.URL | str, **options: Unpack[RequestOptions]) -> httpx.Response:
        """Send a GET."""
        return await self.request("GET", url, **options)

    async def post(self, url: httpx.URL | str, **options: Unpack[RequestOptions]) -> httpx.Response:
        """Send a POST."""
        return await self.request("POST", url, **options)

    async def put(self, url: httpx.URL | str, **options: Unpack[RequestOptions]) -> httpx.Response:
        """Send a PUT."""
        return await self.request("PUT", url, **options)

    async def patch(self, url: httpx.URL | str, **options: Unpack[RequestOptions]) -> httpx.Response:
        """Send a PATCH."""
        return await self.request("PATCH", url, **options)

    async def delete(self, url: httpx.URL | str, **options: Unpack[RequestOptions]) -> httpx.Response:
        """Send a DELETE."""
        return await self.request("DELETE", url, **options)

    async def head(self, url: httpx.URL | str, **options: Unpack[RequestOptions]) -> httpx.Response:
        """Send a HEAD."""
        return await self.request("HEAD", url, **options)

    async def get_json(self, url: httpx.URL | str, **options: Unpack[RequestOptions]) -> Any:
        """GET `url` and return its parsed JSON; a body that isn't JSON raises `BadResponseError`."""
        response = await self.get(url, **options)
        try:
            return response.json()
        except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError both are
            raise BadResponseError(
                f"invalid JSON from GET {redact_url(response.request.url)}: {type(exc).__name__}",
                request=response.request,
            ) from None

    @asynccontextmanager
    async def stream(
        self, method: str, url: httpx.URL | str, **options: Unpack[RequestOptions]
    ) -> AsyncIterator[httpx.Response]:
        """Send a request and yield the response before its body is read, for large downloads.

        Takes the same keywords as `request()`; `max_bytes=` (default `HTTP_MAX_RESPONSE_BYTES`,
        None for no cap) makes iterating the body raise `ResponseTooLargeError` once passed.
        Retries happen only before the response is yielded.
        """
        raise_for_status = options.pop("raise_for_status", True)
        call = self.pipeline.call_options(options)  # type: ignore[arg-type]
        task = self._admit()
        try:
            response = await self._open(method, url, options, call, task, stream=True)
            try:
                if raise_for_status and (error := error_for_response(response)) is not None:
                    raise error
                yield response
            finally:
                await response.aclose()
        except asyncio.CancelledError:
            self._raise_if_drained(task)
            raise
        finally:
            self._leave(task)

    @asynccontextmanager
    async def isolated(self, **client_options: Any) -> AsyncIterator[httpx.AsyncClient]:
        """A private client built from the same settings, for callers needing their own TLS or auth.

        Args:
            **client_options: `httpx.AsyncClient` arguments that replace the shared ones
                (e.g. `verify=`, `auth=`, `cert=`, `headers=`).
        """
        options = self.client_options()
        headers = httpx.Headers(options.pop("headers"))
        headers.update(client_options.pop("headers", None) or {})
        options.update(client_options)
        async with httpx.AsyncClient(headers=headers, **options) as client:
            yield client

    def get_pool_stats(self) -> PoolStats:
        """A cheap snapshot of live pool figures, limits and request counters; never awaits."""
        clients = self._live_clients()
        states = [read_pool_state(client) for client in clients]
        known = [state for state in states if state is not None]
        merged = merge_pool_states(known)
        counts: Counter[str] = Counter()
        for conn in merged.connections:
            counts[conn.state] += 1
            counts["http2" if conn.http_version == "HTTP/2" else "http1"] += 1
        stats, settings = self.stats, self.settings
        return PoolStats(
            available=len(known) == len(states),
            client_open=bool(clients),
            transport=transport_name(clients[0] if clients else None),
            connections=len(merged.connections),
            active=counts["active"],
            idle=counts["idle"],
            connecting=counts["connecting"],
            queued=sum(merged.queued.values()),
            http1=counts["http1"],
            http2=counts["http2"],
            origins=summarize_origins(merged),
            max_connections=settings.max_connections,
            max_keepalive_connections=settings.max_keepalive_connections,
            keepalive_expiry=settings.keepalive_expiry,
            requests_total=stats.total,
            in_flight=stats.in_flight,
            by_status_class=dict(stats.by_status_class),
            errors=dict(stats.errors),
            latency=stats.latency(),
            retries=stats.retries,
            rate_limited=self.resilience.limiter.waits,
            breakers=dict(self.resilience.breakers.states()),
            cache=self.resilience.cache.stats(),
            blocks=self.resilience.limiter.blocks(),
            trends=stats.trends.busiest(MAX_TRENDS),
            cluster=self.resilience.shared.cluster(),
        )


http_client = HTTPClient()
