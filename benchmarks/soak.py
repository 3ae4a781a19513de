"""Soak the shared client: 10,000 requests at concurrency 50 against a faulty local upstream.

The upstream (a child process on 127.0.0.1) answers 20% 503, resets 5% of connections, delays 5%,
and answers the rest 200. Retries are on. Prints outcomes per kind, unhandled exceptions (must be 0),
the pool state afterwards (must be idle), RSS at start, along the way and at the end, and the elapsed time.

Run: uv run python benchmarks/soak.py [--requests N] [--concurrency C]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import socket
import struct
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from loguru import logger

from services.config import HTTPSettings
from services.errors import CourierHTTPError
from services.http_client import HTTPClient

BODY = b'{"ok": true, "items": [1, 2, 3]}'
SLOW_SECONDS = 0.3


def rss_mib() -> float:
    """Resident set size of this process, in MiB (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# ---- the faulty upstream (runs in a child process) ----


async def _serve_connection(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, rng: random.Random
) -> None:
    try:
        for _ in range(10_000):  # requests per keep-alive connection, bounded
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            if length:
                await reader.readexactly(length)
            roll = rng.random()
            if roll < 0.20:
                writer.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbusy")
            elif roll < 0.25:
                sock = writer.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                if roll < 0.225:  # half before any answer, half in the middle of the body
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\npartial")
                    await writer.drain()
                writer.transport.abort()
                return
            else:
                if roll < 0.30:
                    await asyncio.sleep(SLOW_SECONDS)
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                    % (len(BODY), BODY)
                )
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def _upstream() -> None:
    rng = random.Random(20261122)
    server = await asyncio.start_server(
        lambda r, w: _serve_connection(r, w, rng), "127.0.0.1", 0, backlog=512
    )
    print(server.sockets[0].getsockname()[1], flush=True)
    # The parent closes our stdin when it is done; that ends this process.
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    server.close()


# ---- the soak itself ----


async def soak(port: int, total: int, concurrency: int, transport: str) -> int:
    settings = HTTPSettings(
        transport=transport,
        retries=3,
        retry_backoff=0.02,
        retry_backoff_max=0.5,
        read_timeout=2.0,
        connect_timeout=2.0,
        deadline=10.0,
        breaker_threshold=10,
        breaker_cooldown=0.5,
        host_limits=(),
        cache=False,
    )
    service = HTTPClient(settings)
    url = f"http://127.0.0.1:{port}/item"
    outcomes: Counter[str] = Counter()
    unhandled: Counter[str] = Counter()
    rss: list[tuple[int, float]] = [(0, rss_mib())]
    next_index = 0
    done = 0

    async def worker() -> None:
        nonlocal next_index, done
        while next_index < total:  # bounded: every pass takes one index
            index = next_index
            next_index += 1
            try:
                response = await service.get(url, params={"i": index}, raise_for_status=False)
                outcomes[str(response.status_code)] += 1
            except CourierHTTPError as exc:
                outcomes[type(exc).__name__] += 1
            except Exception as exc:
                unhandled[f"{type(exc).__name__}: {exc}"] += 1
            done += 1
            if done % 2000 == 0:
                rss.append((done, rss_mib()))

    started = time.perf_counter()
    cpu_started = time.process_time()
    await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(concurrency))), timeout=300)
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu_started

    stats = service.get_pool_stats()
    # Keep-alive connections the upstream reset are noticed on their next use; give the pool a moment.
    for _ in range(50):
        if stats.active == 0 and stats.queued == 0 and stats.connecting == 0:
            break
        await asyncio.sleep(0.02)
        stats = service.get_pool_stats()
    rss_before_close = rss_mib()
    await service.close()

    print(f"requests: {total} at concurrency {concurrency}, retries on (max 3)")
    print(f"elapsed: {elapsed:.1f} s ({total / elapsed:.0f} calls/s), client CPU {cpu:.1f} s")
    print("outcomes:", ", ".join(f"{kind}={count}" for kind, count in outcomes.most_common()))
    print(f"every call ended in a response or a typed error: {sum(outcomes.values()) == total}")
    print(f"unhandled exceptions: {sum(unhandled.values())}")
    for kind, count in unhandled.most_common(5):
        print(f"  {count} x {kind}")
    print(
        f"attempts retried: {stats.retries}; service counters: {stats.by_status_class} errors={stats.errors}"
    )
    print(
        "pool afterwards: "
        f"transport={stats.transport} connections={stats.connections} active={stats.active} "
        f"idle={stats.idle} connecting={stats.connecting} queued={stats.queued} in_flight={stats.in_flight} "
        f"breakers={stats.breakers or 'all closed'}"
    )
    print(
        f"latency per call: p50={stats.latency.p50_ms} ms p95={stats.latency.p95_ms} ms "
        f"p99={stats.latency.p99_ms} ms (last {stats.latency.samples} calls)"
    )
    print(
        "RSS MiB (after N calls): "
        + ", ".join(f"{n}: {mib:.1f}" for n, mib in rss)
        + f"; end (before close) {rss_before_close:.1f}, after close {rss_mib():.1f}"
    )
    idle = stats.active == 0 and stats.queued == 0 and stats.in_flight == 0
    ok = not unhandled and sum(outcomes.values()) == total and idle
    print(f"RESULT: {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--transport", choices=("auto", "fast", "httpcore"), default="auto")
    parser.add_argument("--upstream", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.upstream:
        asyncio.run(_upstream())
        return 0
    logger.remove()
    logger.add(
        sys.stderr, level="ERROR"
    )  # retries log at WARNING; thousands of lines would swamp the figures
    upstream = subprocess.Popen(
        [sys.executable, __file__, "--upstream"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert upstream.stdout is not None
        port = int(upstream.stdout.readline())
        return asyncio.run(soak(port, args.requests, args.concurrency, args.transport))
    finally:
        assert upstream.stdin is not None
        upstream.stdin.close()
        try:
            upstream.wait(10)
        except subprocess.TimeoutExpired:
            upstream.kill()
            upstream.wait(5)


if __name__ == "__main__":
    sys.exit(main())
