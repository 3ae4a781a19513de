"""A raw server on 127.0.0.1 sending exactly the bytes a transport test needs, and pool helpers."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events
import httpx
import pytest
import trustme
from hypercorn.asyncio import serve
from hypercorn.config import Config

from services.transport.pool import FastTransport

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class RawServer:
    """A TCP server running `handler` per connection; counts accepted connections."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.accepted = 0
        self.writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None
        self.requests: list[bytes] = []

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self.writers.append(writer)
        try:
            await self.handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            writer.close()

    async def close(self) -> None:
        """Stop listening and close every connection."""
        if self.server is not None:
            self.server.close()
        for writer in self.writers:
            writer.close()
        await asyncio.sleep(0.01)


async def read_request(reader: asyncio.StreamReader) -> bytes:
    """Read one request head (and its Content-Length body)."""
    head = await reader.readuntil(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            await reader.readexactly(int(line.split(b":")[1]))
    return head


def answer(*responses: bytes, close_after: bool = False) -> Handler:
    """A handler sending the given raw responses, one per request, in order."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for raw in responses:
            await read_request(reader)
            writer.write(raw)
            await writer.drain()
        if close_after:
            return
        await reader.read()  # until the client hangs up

    return handle


def ok(body: bytes = b"hello", extra: bytes = b"") -> bytes:
    """A 200 response with a Content-Length body and `extra` raw header lines."""
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%b\r\n%b" % (len(body), extra, body)


RawServerFactory = Callable[..., Awaitable[tuple[str, RawServer]]]


@pytest.fixture
async def raw_server() -> AsyncIterator[RawServerFactory]:
    """Start RawServers on 127.0.0.1 (TLS when given a context); returns each base URL and server."""
    servers: list[RawServer] = []

    async def start(handler: Handler, *, tls: ssl.SSLContext | None = None) -> tuple[str, RawServer]:
        server = RawServer(handler)
        server.server = await asyncio.start_server(server._on_client, "127.0.0.1", 0, ssl=tls)
        servers.append(server)
        port = server.server.sockets[0].getsockname()[1]
        return f"{'https' if tls else 'http'}://127.0.0.1:{port}", server

    yield start
    for server in servers:
        await server.close()


def pool(c: httpx.AsyncClient) -> FastTransport:
    """The client's FastTransport."""
    transport = c._transport
    assert isinstance(transport, FastTransport)
    return transport


def states(c: httpx.AsyncClient) -> list[str]:
    """The states of the client's pooled connections, sorted."""
    return sorted(conn.state for conn in pool(c).pool_state().connections)


async def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll until `predicate` holds; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.005)


# --- HTTP/2 servers ---------------------------------------------------------------------------------

ASGIApp = Callable[..., Awaitable[None]]


@dataclass
class Hypercorn:
    """A running hypercorn server and a client TLS context that trusts it."""

    url: str
    ssl_context: ssl.SSLContext
    connections: list[str] = field(default_factory=list)


@pytest.fixture
def tls_files(tmp_path) -> tuple[str, str]:
    """A server certificate for 127.0.0.1 and the CA that signed it."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "server.pem"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    return str(tmp_path / "server.pem"), str(tmp_path / "ca.pem")


@pytest.fixture
async def hypercorn_server(
    tls_files, unused_tcp_port_factory
) -> AsyncIterator[Callable[..., Awaitable[Hypercorn]]]:
    """Start hypercorn with an ASGI app over TLS; `alpn` picks what it offers."""
    stops: list[tuple[asyncio.Event, asyncio.Task[None]]] = []
    server_pem, ca_pem = tls_files

    async def start(
        app: ASGIApp, *, alpn: tuple[str, ...] = ("h2", "http/1.1"), **options: object
    ) -> Hypercorn:
        port = unused_tcp_port_factory()
        config = Config()
        config.bind = [f"127.0.0.1:{port}"]
        config.certfile = config.keyfile = server_pem
        config.alpn_protocols = list(alpn)
        config.accesslog = config.errorlog = None
        for name, value in options.items():
            setattr(config, name, value)
        stop = asyncio.Event()
        task = asyncio.create_task(serve(app, config, shutdown_trigger=stop.wait))  # type: ignore[arg-type]
        stops.append((stop, task))
        for _ in range(200):
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                break
            await asyncio.sleep(0.01)
        return Hypercorn(f"https://127.0.0.1:{port}", ssl.create_default_context(cafile=ca_pem))

    yield start
    for stop, task in stops:
        stop.set()
        await asyncio.wait_for(task, 10)


H2Handler = Callable[["RawConnection", h2.events.RequestReceived], Awaitable[None]]


class RawConnection:
    """One client connection to the raw server: h2 in server mode, and the socket to break rules on."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, settings: dict) -> None:
        self.reader = reader
        self.writer = writer
        config = h2.config.H2Configuration(client_side=False, header_encoding=None)
        self.h2 = h2.connection.H2Connection(config)
        self.h2.local_settings.update(settings)
        self.frozen = False  # reads and ignores everything: a peer that silently died
        self.streams_seen: list[int] = []
        self.resets: list[int] = []
        self.bodies: dict[int, bytes] = {}

    def flush(self) -> None:
        data = self.h2.data_to_send()
        if data:
            self.writer.write(data)

    def respond(self, stream_id: int, body: bytes = b"ok", status: int = 200) -> None:
        """Send a complete response on `stream_id`."""
        self.h2.send_headers(
            stream_id, [(b":status", str(status).encode()), (b"content-length", str(len(body)).encode())]
        )
        self.h2.send_data(stream_id, body, end_stream=True)
        self.flush()


@dataclass
class RawH2Server:
    """A running raw h2 (cleartext, prior knowledge) server."""

    url: str
    connections: list[RawConnection]


@pytest.fixture
async def raw_h2_server() -> AsyncIterator[Callable[..., Awaitable[RawH2Server]]]:
    """Start an asyncio server speaking h2c with `h2` in server mode; `handler` answers each request."""
    servers: list[asyncio.Server] = []
    tasks: set[asyncio.Task[None]] = set()

    async def start(handler: H2Handler, settings: dict | None = None, *, early: bool = False) -> RawH2Server:
        connections: list[RawConnection] = []

        async def serve_one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            conn = RawConnection(reader, writer, settings or {})
            connections.append(conn)
            conn.h2.initiate_connection()
            conn.flush()
            try:
                while data := await reader.read(65536):
                    if conn.frozen:
                        continue
                    try:
                        events = conn.h2.receive_data(data)
                    except Exception:
                        break
                    for event in events:
                        if isinstance(event, h2.events.RequestReceived):
                            conn.streams_seen.append(event.stream_id)
                            if event.stream_ended is not None or early:
                                task = asyncio.create_task(handler(conn, event))
                                tasks.add(task)
                                task.add_done_callback(tasks.discard)
                            else:
                                conn.bodies[event.stream_id] = b""
                        elif isinstance(event, h2.events.DataReceived):
                            conn.bodies[event.stream_id] = conn.bodies.get(event.stream_id, b"") + event.data
                            conn.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                        elif isinstance(event, h2.events.StreamReset):
                            conn.resets.append(event.stream_id)
                    conn.flush()
                    await writer.drain()
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                writer.close()

        server = await asyncio.start_server(serve_one, "127.0.0.1", 0)
        servers.append(server)
        port = server.sockets[0].getsockname()[1]
        return RawH2Server(f"http://127.0.0.1:{port}", connections)

    yield start
    for task in list(tasks):
        task.cancel()
    for server in servers:
        server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), 2)
