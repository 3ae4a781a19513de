"""What metrics cost: client CPU per request with the histogram observer on vs off, and one scrape.

Run: `uv run python benchmarks/metrics_cost.py` (about half a minute).
Requests go through the shared client's whole pipeline to the in-memory fake socket of no_io.py (no
kernel time), so the observer's share is measured against the cheapest request there is: on a real
network its share is smaller still. "on" and "off" rounds alternate on the same client in one
process; the ratio is the median of per-round ratios. The scrape is `/metrics` rendered with 100
connections open across 10 origins and a histogram holding their label sets.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import statistics
import sys
import time
import types

from loguru import logger
from no_io import fake_create_connection  # benchmarks/ is on sys.path when run as a script

from bot.metrics import BotMetrics
from services.config import HTTPSettings
from services.http_client import HTTPClient
from services.observers import RequestEvent, add_observer, remove_observer

ORIGINS = 10
CONNECTIONS = 100


class NoBot:
    """The Discord side of the metrics, idle."""

    latency = math.nan
    guilds: tuple[object, ...] = ()


async def burst(service: HTTPClient, urls: list[str], requests: int, concurrency: int) -> None:
    async def worker(n: int) -> None:
        for i in range(requests // concurrency):
            await service.get(urls[(n + i) % len(urls)])

    await asyncio.gather(*(worker(n) for n in range(concurrency)))


def per_call_us(metrics: BotMetrics, calls: int = 200_000) -> float:
    """The observer alone: one cached label child, one histogram observation."""
    event = RequestEvent("GET", "http", "127.0.0.1", 8000, 200, None, 0.012)
    observe = metrics.durations
    start = time.process_time()
    for _ in range(calls):
        observe(event)
    return (time.process_time() - start) / calls * 1e6


# A keep-alive HTTP/1.1 server in a child process, so its CPU is not the client's.
SERVER = """
import asyncio, sys
BODY = b'{"id":1,"name":"courier","ok":true}'
HEAD = b"HTTP/1.1 200 OK\\r\\nContent-Type: application/json\\r\\nContent-Length: %d\\r\\n\\r\\n" % len(BODY)
async def serve(reader, writer):
    try:
        while await reader.readuntil(b"\\r\\n\\r\\n"):
            writer.write(HEAD + BODY)
    except (asyncio.IncompleteReadError, ConnectionError):
        writer.close()
async def main():
    servers = [await asyncio.start_server(serve, "127.0.0.1", 0) for _ in range(int(sys.argv[1]))]
    print(" ".join(str(s.sockets[0].getsockname()[1]) for s in servers), flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""


async def measure(
    service: HTTPClient, metrics: BotMetrics, urls: list[str], args: argparse.Namespace
) -> None:
    """Alternate rounds with and without the observer on the same client; print medians and the ratio."""
    await burst(service, urls, 2_000, args.concurrency)  # warm up
    us: dict[str, list[float]] = {"off": [], "on": []}
    for n in range(args.rounds):
        for variant in ("off", "on") if n % 2 else ("on", "off"):  # neither always runs first
            if variant == "on":
                add_observer(metrics.durations)
            cpu = time.process_time()
            await burst(service, urls, args.requests, args.concurrency)
            us[variant].append((time.process_time() - cpu) / args.requests * 1e6)
            remove_observer(metrics.durations)
    ratios = [on / off for on, off in zip(us["on"], us["off"], strict=True)]
    off = statistics.median(us["off"])
    print("| observer | us/request | vs off |")
    print("|---|---:|---:|")
    print(f"| off | {off:.1f} | 1.00x |")
    print(f"| on (histogram) | {statistics.median(us['on']):.1f} | {statistics.median(ratios):.3f}x |")


async def main(args: argparse.Namespace) -> None:
    settings = HTTPSettings.from_env(
        {
            "HTTP_MAX_KEEPALIVE_CONNECTIONS": str(CONNECTIONS),
            "HTTP_CACHE": "false",
            "HTTP_KEEPALIVE_EXPIRY": "600",
        }
    )
    head = f"{args.requests} requests x {args.rounds} rounds, c={args.concurrency}, client CPU per request"
    server = await asyncio.create_subprocess_exec(
        sys.executable, "-c", SERVER, str(ORIGINS), stdout=asyncio.subprocess.PIPE
    )
    try:
        assert server.stdout is not None
        ports = (await server.stdout.readline()).decode().split()
        service = HTTPClient(settings)
        metrics = BotMetrics(NoBot(), service)
        print(f"\n{head}, over loopback to a server in another process (median)\n")
        await measure(service, metrics, [f"http://127.0.0.1:{p}/small.json" for p in ports], args)
        await service.close()
    finally:
        server.kill()
        await server.wait()

    loop = asyncio.get_running_loop()
    loop.create_connection = types.MethodType(fake_create_connection, loop)  # type: ignore[method-assign]
    service = HTTPClient(settings)
    metrics = BotMetrics(NoBot(), service)
    urls = [f"http://127.0.0.1:{8000 + n}/small.json" for n in range(ORIGINS)]  # never dialled
    print(f"\n{head}, no I/O: sockets replaced by no_io.py's fake (median)\n")
    await measure(service, metrics, urls, args)
    alone = per_call_us(metrics)
    print(f"\nthe histogram observer alone: {alone:.2f} us per request\n")

    await burst(service, urls, CONNECTIONS, CONNECTIONS)  # 100 at once: 100 connections stay open
    stats = service.get_pool_stats()
    render_ms, pool_ms = [], []
    for _ in range(args.scrapes):
        cpu = time.process_time()
        body = metrics.render()
        render_ms.append((time.process_time() - cpu) * 1e3)
        cpu = time.process_time()
        service.get_pool_stats()
        pool_ms.append((time.process_time() - cpu) * 1e3)
    print(
        f"scrape with {stats.connections} connections open across {len(stats.origins)} origins, "
        f"{len(body):,} bytes:"
    )
    print(f"  whole /metrics body: {statistics.median(render_ms):.2f} ms CPU (median of {args.scrapes})")
    print(f"  of which the pool snapshot: {statistics.median(pool_ms):.2f} ms")
    await service.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=5_000)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--scrapes", type=int, default=200)
    args = parser.parse_args()
    logger.remove()
    logger.add(sys.stderr, level="INFO")
    asyncio.run(main(args))
