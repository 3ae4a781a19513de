"""HTTP/2 for Courier's transport: the jh2 state machine driven from an asyncio protocol, and the pool's
HTTP/2 side (one connection per origin, dialed once, carrying many streams; RFC 9113).

Every frame the state machine queues while a batch of received events is handled, or while the
requests of one loop iteration open their streams, leaves in one `transport.write`; the receive windows
are large enough that a response of a few MB never waits for a WINDOW_UPDATE.

Why jh2 and not h2: jh2 is h2's maintained fork (niquests' HTTP/2) with the same API and a compiled
HPACK codec; h2's pure-Python HPACK decoding of nginx's Huffman-coded response headers was the largest
cost of a request. Against nginx over TLS (benchmarks/http_bench.py cells, 3,000 small GETs each),
client CPU per request at c=10/100: 239/235 us on h2, 131/130 us on jh2 with the open-stream count
below, against 680/760 us for stock httpx's HTTP/2 and 117/130 us for aiohttp's HTTP/1.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol, cast

import httpx
import jh2.config
import jh2.connection
import jh2.errors
import jh2.events
import jh2.exceptions
import jh2.settings

from services.errors import too_large
from services.headers import HEADER_NAMES
from services.resilience.retry import IDEMPOTENT_METHODS, Deadline
from services.stats import ConnectionSnapshot, ConnectionState
from services.transport.deadline import DEADLINE, raise_if_past_deadline, within
from services.transport.http11 import READ_HIGH_WATER, Key, NetworkStream
from services.transport.httpx_glue import build_response, header_list, read_decoded, set_content

if TYPE_CHECKING:
    from services.transport.pool import FastTransport

# RFC 9113 §6.9.2: our receive window for each new stream, and what the connection's window is raised
# to right after the preface, so that bodies of a few MB flow without waiting for our acknowledgements.
STREAM_WINDOW = 4 * 1024 * 1024
CONNECTION_WINDOW = 16 * 1024 * 1024
DEFAULT_WINDOW = 65_535
# Streams opened on a connection before the server's first SETTINGS says how many it allows; the
# connection waits for that SETTINGS anyway (RFC 9113 §3.4: it is the first frame of its preface).
INITIAL_MAX_STREAMS = 100
# More streams than this are never open at once on one connection, whatever the server allows.
MAX_STREAMS = 1000
# SETTINGS and PING frames the server may send without a response frame in between: more is a flood
# (CVE-2019-9512/9515), each of which would make us queue an acknowledgement.
MAX_CONTROL_FRAMES = 1000
# Our acknowledgements pile up past this many unsent bytes only if the server stopped reading.
MAX_WRITE_BACKLOG = 1024 * 1024
# Stream ids are 31 bits (RFC 9113 §5.1.1): a connection near the end of them takes no new streams.
LAST_STREAM_ID = 2**31 - 1 - 2 * MAX_STREAMS
# A timer firing this close to when a wait is due ends the wait instead of re-arming.
TIMER_SLACK = 0.001
# An idle connection older than this is PINGed before it carries a request again.
PING_AFTER = 2.0
# Times one request goes again on a new connection after a refused stream (GOAWAY, REFUSED_STREAM).
MAX_RETRIES = 3
# RFC 9113 §8.2.2: connection-specific header fields are malformed in HTTP/2; Host becomes :authority.
_DROPPED_HEADERS = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"}
)

_CONFIG = jh2.config.H2Configuration(
    client_side=True,
    header_encoding=None,
    # httpx already validated what we send; what we receive is checked where we read it (:status).
    validate_outbound_headers=False,
    normalize_outbound_headers=False,
    validate_inbound_headers=False,
    normalize_inbound_headers=False,
)

ResponseReceived = jh2.events.ResponseReceived
DataReceived = jh2.events.DataReceived
StreamEnded = jh2.events.StreamEnded
StreamReset = jh2.events.StreamReset
WindowUpdated = jh2.events.WindowUpdated
RemoteSettingsChanged = jh2.events.RemoteSettingsChanged
PingReceived = jh2.events.PingReceived
PingAckReceived = jh2.events.PingAckReceived
ConnectionTerminated = jh2.events.ConnectionTerminated
MAX_CONCURRENT = jh2.settings.SettingCodes.MAX_CONCURRENT_STREAMS


class _StateMachine(jh2.connection.H2Connection):  # type: ignore[misc]  # jh2 ships no type hints
    """jh2's client state machine, told how many streams are open instead of counting them per stream.

    jh2 counts open streams on every new one by scanning all of them (and forgets closed ones while at
    it): at 100 concurrent streams that scan was the largest single cost of a request. We know the
    count (streams we haven't finished yet, never fewer than jh2's), and let the scan run every
    `FULL_SCAN_EVERY` streams so closed ones are still forgotten.
    """

    FULL_SCAN_EVERY = 64

    def __init__(self, live: dict[int, H2Stream]) -> None:
        super().__init__(_CONFIG)
        self._live = live
        self._new_streams = 0

    @property
    def open_outbound_streams(self) -> int:
        """Open streams we started (only read by jh2 when a stream opens)."""
        self._new_streams += 1
        if self._new_streams % self.FULL_SCAN_EVERY == 0:
            return int(super().open_outbound_streams)
        return len(self._live)


class H2Owner(Protocol):
    """What a connection tells its pool."""

    def on_idle(self, conn: H2Connection) -> None:
        """The connection has no open stream left."""

    def on_retired(self, conn: H2Connection) -> None:
        """The connection takes no new streams (GOAWAY, failure, stream ids used up)."""

    def on_closed(self, conn: H2Connection) -> None:
        """The connection is gone."""


class H2Stream:
    """One request/response exchange on an `H2Connection`."""

    __slots__ = (
        "body",
        "buffered",
        "complete",
        "deadline",
        "declared",
        "due",
        "ended",
        "error",
        "headers",
        "id",
        "last_read",
        "limit",
        "names",
        "reads",
        "received",
        "refused",
        "status",
        "unacked",
        "waiter",
    )

    def __init__(self, stream_id: int, deadline: Deadline | None) -> None:
        self.id = stream_id
        self.deadline = deadline
        self.status = 0
        self.headers: list[tuple[bytes, bytes, bytes]] = []
        self.names: set[bytes] = set()
        self.declared = -1
        self.body: list[bytes] = []
        self.buffered = 0
        self.unacked = 0
        self.complete = False
        self.ended = False  # we sent END_STREAM
        self.received = False
        self.refused = False
        self.error: httpx.TransportError | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.due: float | None = None
        self.limit: float | None = None
        self.reads = True
        self.last_read = 0.0

    def wake(self) -> None:
        """Resolve the pending wait, if any."""
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class H2Connection(asyncio.Protocol):
    """One HTTP/2 connection: feeds received bytes to `h2` and routes its events to streams."""

    def __init__(self, owner: H2Owner, key: tuple[bytes, bytes, int], max_header_bytes: int) -> None:
        self.owner = owner
        self.key = key
        self.loop = asyncio.get_running_loop()
        self.streams: dict[int, H2Stream] = {}
        self.h2 = _StateMachine(self.streams)
        self.h2.local_settings = jh2.settings.Settings(
            client=True,
            initial_values={
                jh2.settings.SettingCodes.ENABLE_PUSH: 0,
                jh2.settings.SettingCodes.INITIAL_WINDOW_SIZE: STREAM_WINDOW,
                jh2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: max_header_bytes,
            },
        )
        # RFC 7541 §4 and RFC 9113 §6.5.2: an HPACK bomb ends at this many decoded header bytes.
        self.h2.decoder.max_header_list_size = max_header_bytes
        self.transport: asyncio.Transport | None = None
        self.network_stream = NetworkStream(self)
        self.closed = False
        self.usable = True  # takes new streams
        self.max_streams = INITIAL_MAX_STREAMS
        self.ready: asyncio.Future[None] = self.loop.create_future()
        self.idle_since = time.monotonic()
        self.counted = True  # holds a slot of the pool until forgotten
        self.finished = 0  # streams that ran to their end
        self.error: httpx.TransportError | None = None
        self._slot_waiters: deque[asyncio.Future[None]] = deque()
        self._sending: set[H2Stream] = set()
        self._flush_pending = False
        self._write_paused = False
        self._timer: asyncio.TimerHandle | None = None
        self._control_frames = 0
        self._ping: asyncio.Future[None] | None = None
        self._unacked = 0  # received bytes of finished streams not yet handed back to the connection
        self._max_pending = self.h2.max_inbound_frame_size + 9

    # --- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Not an isinstance check: uvloop's transports have asyncio.Transport's methods, not its class.
        self.transport = cast(asyncio.Transport, transport)
        self.h2.initiate_connection()
        self.h2.increment_flow_control_window(CONNECTION_WINDOW - DEFAULT_WINDOW)
        self.transport.write(self.h2.data_to_send())

    def data_received(self, data: bytes) -> None:
        try:
            events = self.h2.receive_data(data)
        except Exception as exc:  # any malformed input, whichever layer (frames, HPACK, state) noticed it
            self._flush()  # the GOAWAY h2 queued
            self.fail(httpx.RemoteProtocolError(f"HTTP/2 protocol error from the server: {exc}"))
            return
        # h2 checks a frame's length only once all of it arrived: a header announcing 16 MB is refused
        # here instead of being buffered (the rest of the buffer is one partial frame at most).
        if _pending_bytes(self.h2) > self._max_pending:
            self.fail(httpx.RemoteProtocolError("the HTTP/2 server sent a frame larger than we allow"))
            return
        streams = self.streams
        now = self.loop.time()
        event: Any
        for event in events:
            kind = type(event)
            if kind is DataReceived:
                self._on_data(event, now)
            elif kind is ResponseReceived:
                stream = streams.get(event.stream_id)
                self._control_frames = 0
                if stream is not None:
                    self._on_response(stream, event.headers, now)
            elif kind is StreamEnded:
                stream = streams.get(event.stream_id)
                if stream is not None:
                    stream.complete = True
                    stream.wake()
            else:
                self._on_other(event)
        self._flush()
        transport = self.transport
        if transport is not None and transport.get_write_buffer_size() > MAX_WRITE_BACKLOG:
            self.fail(httpx.RemoteProtocolError("the HTTP/2 server stopped reading our frames"))

    def _on_data(self, event: Any, now: float) -> None:
        self._control_frames = 0
        stream = self.streams.get(event.stream_id)
        if stream is None:  # a stream we gave up on: hand its share of the connection window back
            if event.flow_controlled_length:
                self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            return
        data = event.data
        stream.body.append(data)
        stream.buffered += len(data)
        stream.unacked += event.flow_controlled_length
        stream.received = True
        stream.last_read = now
        if event.stream_ended is not None:
            stream.complete = True
        stream.wake()

    def _on_response(self, stream: H2Stream, headers: list[tuple[bytes, bytes]], now: float) -> None:
        status = b""
        fields = stream.headers
        names = stream.names
        for name, value in headers:
            if name[:1] == b":":
                if name == b":status":
                    status = value
                continue
            lowered = name.lower()
            fields.append((lowered, lowered, value))
            names.add(lowered)
            if lowered == b"content-length":
                stream.declared = int(value) if value.isdigit() else -1
        stream.received = True
        stream.last_read = now
        if len(status) != 3 or not status.isdigit():
            self._reset(stream, jh2.errors.ErrorCodes.PROTOCOL_ERROR)
            stream.error = httpx.RemoteProtocolError("malformed HTTP/2 response: no valid :status")
        else:
            stream.status = int(status)
        stream.wake()

    def _on_other(self, event: Any) -> None:
        kind = type(event)
        if kind is WindowUpdated:
            for stream in self._sending:
                stream.wake()
        elif kind is RemoteSettingsChanged:
            self._control()
            changed = event.changed_settings.get(MAX_CONCURRENT)
            if changed is not None:
                self.max_streams = max(0, min(changed.new_value, MAX_STREAMS))
                self._wake_slots()
            if not self.ready.done():
                self.ready.set_result(None)
        elif kind is PingReceived:
            self._control()
        elif kind is PingAckReceived:
            if self._ping is not None and not self._ping.done():
                self._ping.set_result(None)
        elif kind is StreamReset:
            reset = self.streams.get(event.stream_id)
            if reset is not None and not reset.complete:
                code = event.error_code
                reset.error = httpx.RemoteProtocolError(
                    f"the server reset the HTTP/2 stream ({_code_name(code)})"
                )
                # RFC 9113 §8.7: a stream refused this way was not processed and may be retried.
                reset.refused = code == jh2.errors.ErrorCodes.REFUSED_STREAM
                reset.wake()
        elif kind is ConnectionTerminated:
            self._on_goaway(event.error_code, event.last_stream_id)
        elif kind is jh2.events.InformationalResponseReceived or kind is jh2.events.TrailersReceived:
            self._control_frames = 0

    def _on_goaway(self, code: int | None, last_stream_id: int | None) -> None:
        """RFC 9113 §6.8: streams above `last_stream_id` were not processed; the rest may finish."""
        self._retire()
        last = last_stream_id if last_stream_id is not None else 0
        name = _code_name(code)
        for stream in self.streams.values():
            if stream.id > last and not stream.complete:
                stream.error = httpx.RemoteProtocolError(f"the server sent GOAWAY ({name}) before the stream")
                stream.refused = True
                stream.wake()
        if not self.streams:
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._retire()
        self._cancel_timer()
        if exc is not None:
            error: httpx.TransportError = httpx.ReadError(f"connection lost: {exc!r}")
        else:
            error = httpx.RemoteProtocolError("the server closed the HTTP/2 connection")
        if self.error is None:
            self.error = error
        for stream in self.streams.values():
            if not stream.complete and stream.error is None:
                stream.error = _copy(self.error)
            stream.wake()
        if not self.ready.done():
            self.ready.set_exception(httpx.ConnectError(f"HTTP/2 connection closed during setup: {error}"))
            self.ready.exception()  # retrieved: nobody may be waiting on it
        if self._ping is not None and not self._ping.done():
            self._ping.set_exception(self.error)
            self._ping.exception()
        self._wake_slots()
        self.owner.on_closed(self)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        for stream in self._sending:
            stream.wake()

    # --- internals ----------------------------------------------------------------------------

    def _control(self) -> None:
        self._control_frames += 1
        if self._control_frames > MAX_CONTROL_FRAMES:
            self.fail(httpx.RemoteProtocolError("the HTTP/2 server flooded us with SETTINGS/PING"))

    def _flush(self) -> None:
        """Write everything `h2` queued, in one write."""
        self._flush_pending = False
        data = self.h2.data_to_send()
        transport = self.transport
        if data and transport is not None and not self.closed:
            transport.write(data)

    def _schedule_flush(self) -> None:
        # Streams opened in the same loop iteration leave in one write (one TLS record, one syscall).
        if not self._flush_pending:
            self._flush_pending = True
            self.loop.call_soon(self._flush)

    def _retire(self) -> None:
        if self.usable:
            self.usable = False
            self.owner.on_retired(self)
            self._wake_slots()

    def _wake_slots(self) -> None:
        while self._slot_waiters and (len(self.streams) < self.max_streams or not self.usable):
            waiter = self._slot_waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                if self.usable:
                    return  # one slot freed, one waiter woken; it takes the slot synchronously

    def _reset(self, stream: H2Stream, code: int) -> None:
        try:
            self.h2.reset_stream(stream.id, code)
        except jh2.exceptions.H2Error:
            return  # closed already on our side
        self._schedule_flush()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # --- used by the transport ------------------------------------------------------------

    def idle_for(self) -> float:
        """Seconds since the last stream finished (meaningful while none is open)."""
        return time.monotonic() - self.idle_since

    @property
    def has_capacity(self) -> bool:
        """Whether a new stream may open now."""
        return self.usable and len(self.streams) < self.max_streams

    def fail(self, error: httpx.TransportError) -> None:
        """Fail every stream with `error` and drop the connection."""
        if self.error is None:
            self.error = error
        for stream in self.streams.values():
            if not stream.complete and stream.error is None:
                stream.error = _copy(error)
            stream.wake()
        self._retire()
        self.abort()

    def abort(self) -> None:
        """Close at once."""
        self._retire()
        if self.transport is not None and not self.closed:
            self.transport.abort()

    def close(self) -> None:
        """Close gracefully: a GOAWAY, then the socket."""
        self._retire()
        if self.transport is not None and not self.closed:
            with contextlib.suppress(jh2.exceptions.H2Error):
                self.h2.close_connection()
            self._flush()
            self.transport.close()

    def open_stream(
        self, headers: list[tuple[bytes, bytes]], *, end: bool, deadline: Deadline | None
    ) -> H2Stream:
        """Send the HEADERS of a new stream (the frame leaves with this loop iteration's others)."""
        stream_id = self.h2.get_next_available_stream_id()
        self.h2.send_headers(stream_id, headers, end_stream=end)
        stream = self.streams[stream_id] = H2Stream(stream_id, deadline)
        stream.ended = end
        if stream_id >= LAST_STREAM_ID:
            self._retire()
        self._schedule_flush()
        return stream

    async def send_body(self, stream: H2Stream, data: bytes, limit: float | None, *, end: bool) -> None:
        """Send `data` on `stream` as flow control allows (RFC 9113 §5.2), waiting up to `limit` for room."""
        h2_state = self.h2
        view = memoryview(data)
        self._sending.add(stream)
        try:
            while True:
                if stream.error is not None:
                    raise stream.error
                if stream.complete:
                    return  # RFC 9113 §8.1: the server answered before the whole body; stop sending it
                if self.closed:
                    raise (
                        _copy(self.error) if self.error else httpx.WriteError("the HTTP/2 connection closed")
                    )
                try:
                    window = h2_state.local_flow_control_window(stream.id)
                    frame = h2_state.max_outbound_frame_size
                    while view and window > 0:
                        size = min(window, frame, len(view))
                        h2_state.send_data(stream.id, view[:size].tobytes())
                        view = view[size:]
                        window -= size
                    if not view and end:
                        h2_state.end_stream(stream.id)
                        stream.ended = True
                except jh2.exceptions.H2Error as exc:
                    if stream.complete or stream.error is not None:
                        continue  # said above: answered early, or reset
                    raise httpx.WriteError(f"could not send the request body over HTTP/2: {exc}") from None
                self._flush()
                if not view and not self._write_paused:
                    return
                await self.wait(stream, limit, reads=False)
        finally:
            self._sending.discard(stream)

    async def wait_slot(self) -> None:
        """Wait until a stream may open (the server's SETTINGS_MAX_CONCURRENT_STREAMS), or retirement."""
        waiter = self.loop.create_future()
        self._slot_waiters.append(waiter)
        try:
            await waiter
        except BaseException:
            if waiter in self._slot_waiters:
                self._slot_waiters.remove(waiter)
            elif waiter.done() and not waiter.cancelled():
                self._wake_slots()  # woken as we were cancelled: pass the slot on
            raise

    async def ping(self, limit: float | None) -> bool:
        """Whether the server answers a PING within `limit` seconds (RFC 9113 §6.7)."""
        if self._ping is None or self._ping.done():
            self._ping = self.loop.create_future()
            self.h2.ping(b"courier\x00")
            self._flush()
        try:
            async with asyncio.timeout(limit):
                await asyncio.shield(self._ping)
        except (TimeoutError, httpx.TransportError):
            return False
        return True

    async def wait(self, stream: H2Stream, limit: float | None, *, reads: bool = True) -> None:
        """Wait for the stream's next event; `limit` seconds without one (or without data), or the
        call's deadline, raise `httpx.ReadTimeout` (`httpx.WriteTimeout` when not waiting on `reads`)."""
        waiter = stream.waiter = self.loop.create_future()
        delay = limit
        deadline = stream.deadline
        if deadline is not None:
            left = deadline.remaining()
            if limit is None or left < limit:
                delay = left
        if delay is None:
            stream.due = None
        else:
            due = stream.due = self.loop.time() + delay
            stream.limit, stream.reads = limit, reads
            # One timer per connection, re-armed lazily at the earliest due wait when it fires.
            if self._timer is None or self._timer.when() > due:
                self._cancel_timer()
                self._timer = self.loop.call_at(due, self._on_timer)
        try:
            await waiter
        finally:
            stream.waiter = None

    def _on_timer(self) -> None:
        self._timer = None
        now = self.loop.time()
        next_due: float | None = None
        for stream in self.streams.values():
            waiter, due = stream.waiter, stream.due
            if waiter is None or waiter.done() or due is None:
                continue
            limit = stream.limit
            if stream.reads and stream.received and limit is not None:
                due = max(due, stream.last_read + limit)  # data arrived meanwhile: the read limit restarts
                if stream.deadline is not None:
                    due = min(due, now + stream.deadline.remaining())
            if due - now > TIMER_SLACK:
                next_due = due if next_due is None else min(next_due, due)
            elif stream.reads:
                waiter.set_exception(httpx.ReadTimeout("timed out reading the response"))
            else:
                waiter.set_exception(httpx.WriteTimeout("timed out writing the request"))
        if next_due is not None:
            self._timer = self.loop.call_at(next_due, self._on_timer)

    def take_body(self, stream: H2Stream) -> bytes:
        """Return and forget the body bytes received so far, handing their window back to the server."""
        body = stream.body
        if not body:
            return b""
        data = body[0] if len(body) == 1 else b"".join(body)
        body.clear()
        stream.buffered = 0
        unacked, stream.unacked = stream.unacked, 0
        if unacked:
            self._acknowledge(stream, unacked)
        return data

    def _acknowledge(self, stream: H2Stream, size: int) -> None:
        """Hand `size` received bytes of `stream` back to the server's windows (RFC 9113 §6.9)."""
        if not stream.complete:
            self.h2.acknowledge_received_data(size, stream.id)
            self._flush_if_queued()
            return
        # A finished stream's window is gone with it: only the connection's is owed, and it is
        # handed back in one WINDOW_UPDATE per half window instead of a jh2 call per response.
        self._unacked += size
        if self._unacked >= CONNECTION_WINDOW // 2:
            self.h2.increment_flow_control_window(self._unacked)
            self._unacked = 0
            self._flush_if_queued()

    def _flush_if_queued(self) -> None:
        if not self._flush_pending:
            self._flush()

    def finish(self, stream: H2Stream) -> None:
        """Forget `stream`; reset it first if it is still open (a cancelled or abandoned request)."""
        if self.streams.pop(stream.id, None) is None:
            return
        self.finished += 1
        if stream.error is None and not (stream.complete and stream.ended):
            # Still open on one side: a cancelled request, a body left unread, or one we stopped sending.
            self._reset(stream, jh2.errors.ErrorCodes.CANCEL)
        if stream.unacked:
            stream.complete = True  # its window is no longer ours to replenish, whatever its state
            self._acknowledge(stream, stream.unacked)
            stream.unacked = 0
        stream.body.clear()
        self._wake_slots()
        if not self.streams:
            self.idle_since = time.monotonic()
            if self.usable:
                self.owner.on_idle(self)
            elif not self.closed:
                self.close()


def _copy(error: httpx.TransportError) -> httpx.TransportError:
    """A fresh exception like `error`: each request raises its own, with its own request attached."""
    return type(error)(str(error))


def _pending_bytes(state: jh2.connection.H2Connection) -> int:
    """Bytes of an incomplete frame in the state machine's receive buffer (its private fields)."""
    buffer = state.incoming_buffer
    return len(getattr(buffer, "_data", b"")) - getattr(buffer, "_data_offset", 0)


def _code_name(code: int | None) -> str:
    if code is None:
        return "no error code"
    try:
        return str(jh2.errors.ErrorCodes(code).name)
    except ValueError:
        return f"error code {code}"


def request_headers(
    method: bytes, scheme: bytes, authority: bytes, path: bytes, fields: httpx.Headers
) -> list[tuple[bytes, bytes]]:
    """The header list of a request in HTTP/2 form: pseudo-headers first (RFC 9113 §8.3.1)."""
    headers = [(b":method", method), (b":authority", authority), (b":scheme", scheme), (b":path", path)]
    for _, lowered, value in header_list(fields):
        if lowered not in _DROPPED_HEADERS:
            if lowered == b"te" and value.lower() != b"trailers":
                continue  # RFC 9113 §8.2.2: TE may only say "trailers"
            if lowered == b"host":
                headers[1] = (b":authority", value)  # a Host the caller set wins, as on HTTP/1.1
                continue
            headers.append((lowered, value))
    return headers


class H2ResponseStream(httpx.AsyncByteStream):
    """A response body read from its HTTP/2 stream as the consumer asks for it."""

    def __init__(
        self, done: Callable[[], None], conn: H2Connection, stream: H2Stream, read_timeout: float | None
    ) -> None:
        self._done = done
        self._conn = conn
        self._stream: H2Stream | None = stream
        self._read_timeout = read_timeout
        self.response: httpx.Response | None = None
        self.started = 0.0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        stream = self._stream
        if stream is None:
            return
        conn = self._conn
        stream.deadline = None  # the call's deadline covers the answer's head; a streamed body takes its time
        try:
            while True:
                chunk = conn.take_body(stream)
                if chunk:
                    yield chunk
                    continue
                if stream.error is not None:
                    raise stream.error
                if stream.complete:
                    break
                await conn.wait(stream, self._read_timeout)
        finally:
            self._finish()

    def _finish(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            self._done()  # resets the stream if the body was left unread, frees its slot
            if self.response is not None:  # what httpx's BoundAsyncStream does on close
                self.response.elapsed = datetime.timedelta(seconds=time.perf_counter() - self.started)

    async def aclose(self) -> None:
        self._finish()


class HTTP2Pool:
    """The pool's HTTP/2 side: per origin one connection that takes new streams, dialed by one request
    while the others wait for it, each connection one entry of the pool's connection count."""

    def __init__(self, pool: FastTransport, *, tls: bool, cleartext: bool) -> None:
        self.pool = pool
        self.tls = tls
        self.cleartext = cleartext
        self.current: dict[Key, H2Connection] = {}  # the connection taking new streams, per origin
        self.draining: set[H2Connection] = set()  # after GOAWAY, finishing their streams
        self.dialing: dict[Key, asyncio.Future[None]] = {}
        self.http11_origins: set[Key] = set()  # answered ALPN with http/1.1
        self.waiting: Counter[Key] = Counter()  # requests waiting for a stream slot or for the dial

    def key_for(self, request: httpx.Request) -> Key | None:
        """The origin of `request` if it goes over HTTP/2 (an origin known to be HTTP/1.1 doesn't)."""
        url = request.url
        scheme = url.raw_scheme
        if scheme == b"https":
            if not self.tls:
                return None
        elif scheme != b"http" or not self.cleartext:
            return None
        key = (scheme, url.raw_host, url.port or (443 if scheme == b"https" else 80))
        return None if key in self.http11_origins else key

    # --- H2Owner ------------------------------------------------------------------------------

    def on_idle(self, conn: H2Connection) -> None:
        """No open stream left: the pool's sweeper closes it after the keep-alive expiry."""
        self.pool._schedule_sweep()

    def on_retired(self, conn: H2Connection) -> None:
        """No new streams: requests of its origin dial a new connection."""
        if self.current.get(conn.key) is conn:
            del self.current[conn.key]
        if not conn.closed:
            self.draining.add(conn)

    def on_closed(self, conn: H2Connection) -> None:
        """Gone: free its slot in the pool."""
        if self.current.get(conn.key) is conn:
            del self.current[conn.key]
        self.draining.discard(conn)
        if conn.counted:
            conn.counted = False
            self.pool._total -= 1

    # --- the pool -----------------------------------------------------------------------------

    def snapshots(self) -> list[ConnectionSnapshot]:
        """Every open HTTP/2 connection, with its open streams."""
        found = []
        for conn in [*self.current.values(), *self.draining]:
            if not conn.closed:
                streams = len(conn.streams)
                state: ConnectionState = "active" if streams else "idle"
                found.append(ConnectionSnapshot(self.pool._origin(conn.key), state, "HTTP/2", streams))
        return found

    def sweep(self, now: float, expiry: float) -> bool:
        """Close connections idle past `expiry`; whether some are left to sweep later."""
        for conn in list(self.current.values()):
            if not conn.streams and now - conn.idle_since > expiry:
                conn.close()
        return bool(self.current)

    def close_all(self) -> bool:
        """Drop every connection at once; whether there were any."""
        conns = [*self.current.values(), *self.draining]
        for conn in conns:
            conn.abort()
        self.current.clear()
        self.draining.clear()
        return bool(conns)

    async def _checkout(
        self, key: Key, request: httpx.Request, timeouts: dict[str, float | None]
    ) -> H2Connection | None:
        """The origin's connection with room for a stream, dialing one if needed; None when the origin
        answered ALPN with HTTP/1.1."""
        deadline: Deadline | None = request.extensions.get(DEADLINE)
        while True:
            if self.pool._closed:
                raise RuntimeError("the transport is closed")
            if key in self.http11_origins:
                return None
            conn = self.current.get(key)
            if conn is not None:
                if not conn.has_capacity:
                    await self._wait(key, conn.wait_slot(), request, timeouts)
                    continue
                if conn.streams or time.monotonic() - conn.idle_since < PING_AFTER:
                    return conn
                # RFC 9113 §6.7: a connection idle for a while may be dead without us knowing.
                if await conn.ping(within(timeouts.get("connect"), deadline)):
                    conn.idle_since = time.monotonic()
                    if conn.has_capacity:
                        return conn
                else:
                    conn.abort()
                continue
            dialing = self.dialing.get(key)
            if dialing is not None:
                try:
                    await self._wait(key, asyncio.shield(dialing), request, timeouts)
                except httpx.TransportError as exc:  # the dial failed: so does this request, on its own error
                    raise type(exc)(str(exc), request=request) from None
                continue
            await self._dial(key, request, timeouts)

    async def _wait(
        self, key: Key, step: Awaitable[None], request: httpx.Request, timeouts: dict[str, float | None]
    ) -> None:
        """Await `step` within the pool timeout, counted as queued for `key`."""
        self.waiting[key] += 1
        try:
            await _pool_wait(step, request, timeouts)
        finally:
            self.waiting[key] -= 1
            if not self.waiting[key]:
                del self.waiting[key]

    async def _dial(self, key: Key, request: httpx.Request, timeouts: dict[str, float | None]) -> None:
        """Open the origin's connection; requests arriving meanwhile wait for it instead of dialing too."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.dialing[key] = future
        try:
            await self._open_connection(key, request, timeouts)
        except httpx.TransportError as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: there may be no waiter
            raise
        finally:
            if not future.done():
                future.set_result(None)  # done, or gave up without a verdict: waiters look again
            if self.dialing.get(key) is future:
                del self.dialing[key]

    async def _open_connection(
        self, key: Key, request: httpx.Request, timeouts: dict[str, float | None]
    ) -> None:
        pool = self.pool
        deadline: Deadline | None = request.extensions.get(DEADLINE)
        pool._reserve(key)
        connect_limit = within(timeouts.get("connect"), deadline)
        try:
            conn = await pool._dial(key, connect_limit, http2=True)
        except BaseException as exc:
            pool._connected(key)
            pool._total -= 1
            if isinstance(exc, httpx.TimeoutException):
                raise_if_past_deadline(request)
            raise
        pool._connected(key)
        if not isinstance(conn, H2Connection):
            self.http11_origins.add(key)
            pool._park(conn)  # idle, where this request's HTTP/1.1 path finds it
            return
        if pool._closed or conn.closed:
            conn.abort()
            self.on_closed(conn)
            raise httpx.ConnectError(f"{pool._origin(key)} closed the HTTP/2 connection during setup")
        self.current[key] = conn
        try:
            # RFC 9113 §3.4: the server's preface is its SETTINGS; it says how many streams we may open.
            async with asyncio.timeout(connect_limit):
                await conn.ready
        except BaseException as exc:
            conn.abort()
            self.on_closed(conn)
            if isinstance(exc, TimeoutError):
                raise_if_past_deadline(request)
                raise httpx.ConnectTimeout(f"{pool._origin(key)} sent no HTTP/2 SETTINGS") from None
            raise

    async def _open(
        self, key: Key, request: httpx.Request, timeouts: dict[str, float | None]
    ) -> tuple[H2Connection, H2Stream, float] | None:
        """Send `request` on a stream and wait for the response head, holding one of the origin's slots
        (as an HTTP/1.1 exchange does) from then until `_done`; None when the origin is HTTP/1.1."""
        pool = self.pool
        if pool._closed:
            raise RuntimeError("the transport is closed")
        if not pool._slots.try_acquire(key):
            await pool._queue(key, request, timeouts)
        started = asyncio.get_running_loop().time()
        try:
            opened = await self._open_stream(key, request, timeouts)
        except BaseException:
            pool._slots.release(key)
            raise
        if opened is None:
            pool._slots.release(key)  # the HTTP/1.1 path takes a slot of its own
            return None
        return (*opened, started)

    def _done(self, conn: H2Connection, stream: H2Stream, started: float) -> None:
        """Forget the stream and free its slot, teaching the origin's limit how long it took."""
        conn.finish(stream)
        end = stream.last_read if stream.received else conn.loop.time()
        self.pool._slots.release(conn.key, end - started)

    async def _open_stream(
        self, key: Key, request: httpx.Request, timeouts: dict[str, float | None]
    ) -> tuple[H2Connection, H2Stream] | None:
        deadline: Deadline | None = request.extensions.get(DEADLINE)
        url = request.url
        body_stream = request.stream
        replayable = isinstance(body_stream, httpx.ByteStream)
        body = b"".join(body_stream) if isinstance(body_stream, httpx.ByteStream) else None
        headers = request_headers(request.method.encode(), key[0], url.netloc, url.raw_path, request.headers)
        write_timeout = timeouts.get("write")
        read_timeout = timeouts.get("read")
        retries = 0
        while True:
            conn = self.current.get(key)
            if conn is None or not conn.has_capacity or (not conn.streams and conn.idle_for() >= PING_AFTER):
                conn = await self._checkout(key, request, timeouts)
                if conn is None:
                    return None
            reused = conn.finished > 0
            try:
                stream = conn.open_stream(headers, end=body == b"", deadline=deadline)
            except Exception:  # the state machine refused a new stream: this connection is done for
                conn.abort()
                retries += 1
                if retries > MAX_RETRIES:
                    raise httpx.RemoteProtocolError(
                        "could not open an HTTP/2 stream", request=request
                    ) from None
                continue
            try:
                if body:
                    await conn.send_body(stream, body, write_timeout, end=True)
                elif body is None:
                    async for chunk in body_stream:  # type: ignore[union-attr]
                        if chunk:
                            await conn.send_body(stream, chunk, write_timeout, end=False)
                    await conn.send_body(stream, b"", write_timeout, end=True)
                while not stream.status:
                    if stream.error is not None:
                        raise stream.error
                    await conn.wait(stream, read_timeout)
                return conn, stream
            except httpx.TransportError as exc:
                conn.finish(stream)
                # RFC 9113 §8.7: a refused stream wasn't processed. A connection that died before
                # answering is HTTP/1.1's stale keep-alive case: safe to repeat for idempotent methods.
                stale = (
                    reused
                    and conn.closed
                    and not stream.received
                    and not isinstance(exc, httpx.TimeoutException)
                    and request.method in IDEMPOTENT_METHODS
                )
                if replayable and (stream.refused or stale) and retries < MAX_RETRIES:
                    retries += 1
                    continue
                if isinstance(exc, httpx.TimeoutException):
                    raise_if_past_deadline(request)
                exc.request = request
                raise
            except BaseException:
                conn.finish(stream)  # cancelled: RST_STREAM(CANCEL), the other streams carry on
                raise

    async def fetch(self, key: Key, request: httpx.Request, max_bytes: int | None) -> httpx.Response | None:
        """`FastTransport.fetch` over HTTP/2; None when the origin turned out to speak HTTP/1.1 only."""
        started = time.perf_counter()
        timeouts: dict[str, float | None] = request.extensions.get("timeout") or {}
        opened = await self._open(key, request, timeouts)
        if opened is None:
            return None
        conn, stream, checked_out = opened
        chunks: list[bytes] = []
        taken = 0
        try:
            if max_bytes is not None and stream.declared > max_bytes:
                raise too_large(request, max_bytes)
            read_timeout = timeouts.get("read")
            while not stream.complete:
                if stream.error is not None:
                    raise stream.error
                await conn.wait(stream, read_timeout)
                if max_bytes is not None and taken + stream.buffered > max_bytes:
                    raise too_large(request, max_bytes)
                if stream.buffered > READ_HIGH_WATER:
                    taken += stream.buffered
                    chunks.append(conn.take_body(stream))  # hands the window back to the server
        except BaseException as exc:
            conn.finish(stream)
            self.pool._slots.release(key)
            if isinstance(exc, httpx.TimeoutException):
                raise_if_past_deadline(request)
            if isinstance(exc, httpx.RequestError):
                exc.request = request
            raise
        body = conn.take_body(stream)
        self._done(conn, stream, checked_out)
        if chunks:
            body = b"".join([*chunks, body])
        encoded = b"content-encoding" in stream.names
        response = _response(conn, stream, request, httpx.ByteStream(body))
        if encoded:
            read_decoded(response, max_bytes)
        else:
            set_content(response, body)
        response.elapsed = datetime.timedelta(seconds=time.perf_counter() - started)
        return response

    async def stream(self, key: Key, request: httpx.Request) -> httpx.Response | None:
        """`FastTransport.handle_async_request` over HTTP/2; None when the origin is HTTP/1.1 only."""
        started = time.perf_counter()
        timeouts: dict[str, float | None] = request.extensions.get("timeout") or {}
        opened = await self._open(key, request, timeouts)
        if opened is None:
            return None
        conn, stream, checked_out = opened
        body = H2ResponseStream(
            lambda: self._done(conn, stream, checked_out), conn, stream, timeouts.get("read")
        )
        body.started = started
        body.response = response = _response(conn, stream, request, body)
        return response


def _response(conn: H2Connection, stream: H2Stream, request: httpx.Request, body: Any) -> httpx.Response:
    extensions = {
        "http_version": b"HTTP/2",  # STYLE trap 16
        "network_stream": conn.network_stream,
        HEADER_NAMES: stream.names,
    }
    return build_response(stream.status, stream.headers, body, request, extensions)


async def _pool_wait(
    step: Awaitable[None], request: httpx.Request, timeouts: dict[str, float | None]
) -> None:
    """Await `step` within the pool timeout (a stream slot, or another request's dial)."""
    deadline: Deadline | None = request.extensions.get(DEADLINE)
    try:
        async with asyncio.timeout(within(timeouts.get("pool"), deadline)):
            await step
    except TimeoutError:
        raise_if_past_deadline(request)
        raise httpx.PoolTimeout("timed out waiting for an HTTP/2 stream", request=request) from None
