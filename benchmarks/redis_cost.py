"""What sharing state through Redis costs a request: REDIS_URL set vs unset, side by side in one run.

Run: `uv run python benchmarks/redis_cost.py` (about a minute; needs `redis-server` on PATH).
The upstream is the in-memory fake socket of no_io.py (no syscalls), so what is left is Courier's own
work per request; Redis is a real redis-server this script starts on 127.0.0.1 and stops by its pid.
Four variants run interleaved, medians of several rounds:

- a host with no configured limit: Redis is not on the request's path (blocks and circuits are read
  from local memory; the shared cache is asked only for entries announced to exist). Goal: within 5%.
- a host with a configured limit: every attempt takes its turn from the cluster's GCRA, one Lua
  round trip; the table shows what that costs in client CPU, in redis-server CPU and in wall time.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import types
from collections.abc import Awaitable, Callable
from typing import Any

from loguru import logger
from no_io import fake_create_connection

from services.config import HostLimit, HTTPSettings
from services.http_client import HTTPClient

One = Callable[[], Awaitable[int]]
VARIANTS = ("local", "redis", "local-limited", "redis-limited")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_redis(folder: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    command = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", folder]
    process = subprocess.Popen([*command, "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return process, f"redis://127.0.0.1:{port}/0"
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise SystemExit("redis-server did not start")


def server_cpu(pid: int) -> float:
    """Seconds of CPU redis-server has used (user + system), from /proc."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


async def build(variant: str, url: str, redis_url: str) -> tuple[One, HTTPClient]:
    limits = (HostLimit("127.0.0.1", requests=10_000_000, period=1),) if "limited" in variant else ()
    settings = HTTPSettings(
        max_keepalive_connections=100,
        host_limits=limits,
        redis_url=redis_url if variant.startswith("redis") else None,
        redis_timeout=0.5,  # measure the round trip, not fallbacks on a busy machine
        instance=variant,
    )
    service = HTTPClient(settings)

    async def get() -> int:
        return len((await service.get(url)).content)

    return get, service


async def run(one: One, requests: int, concurrency: int) -> None:
    async def worker() -> None:
        for _ in range(requests // concurrency):
            await one()

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def main(concurrency: int, requests: int, rounds: int) -> None:
    folder = tempfile.mkdtemp(prefix="courier-redis-bench-")
    redis, redis_url = start_redis(folder)
    try:
        with socket.socket() as listener:
            listener.bind(("127.0.0.1", 0))
            upstream_port = listener.getsockname()[1]
            loop = asyncio.get_running_loop()
            real = loop.create_connection

            async def create_connection(
                self: Any, factory: Any, host: Any = None, port: Any = None, **kw: Any
            ) -> Any:
                if port == upstream_port:  # the upstream is the fake; Redis is real
                    return await fake_create_connection(self, factory, host, port, **kw)
                return await real(factory, host, port, **kw)

            loop.create_connection = types.MethodType(create_connection, loop)  # type: ignore[method-assign]
            url = f"http://127.0.0.1:{upstream_port}/small.json"
            built = {v: await build(v, url, redis_url) for v in VARIANTS}
            for one, _ in built.values():
                await run(one, 2_000, concurrency)  # warm up (and connect)
            cpu: dict[str, list[float]] = {v: [] for v in VARIANTS}
            wall: dict[str, list[float]] = {v: [] for v in VARIANTS}
            server: dict[str, list[float]] = {v: [] for v in VARIANTS}
            for _ in range(rounds):
                for v, (one, _) in built.items():
                    started, used, served = time.perf_counter(), time.process_time(), server_cpu(redis.pid)
                    await run(one, requests, concurrency)
                    cpu[v].append((time.process_time() - used) / requests * 1e6)
                    wall[v].append((time.perf_counter() - started) / requests * 1e6)
                    server[v].append((server_cpu(redis.pid) - served) / requests * 1e6)
            for _, service in built.values():
                fallbacks = service.get_pool_stats().cluster
                if fallbacks is not None and fallbacks.fallbacks:
                    print(f"note: {fallbacks.instance} fell back to local state {fallbacks.fallbacks} times")
                await service.close()
    finally:
        redis.kill()
        redis.wait()
        shutil.rmtree(folder, ignore_errors=True)
    print(f"\nc={concurrency}, {requests} requests x {rounds} rounds, medians; no-I/O upstream, real Redis\n")
    print("| variant | client CPU us/req | vs local | redis-server CPU us/req | wall us/req | vs local |")
    print("|---|---:|---:|---:|---:|---:|")
    for v in VARIANTS:
        base = v.replace("redis", "local")
        c, w = statistics.median(cpu[v]), statistics.median(wall[v])
        c0, w0 = statistics.median(cpu[base]), statistics.median(wall[base])
        s = statistics.median(server[v])
        print(f"| {v} | {c:.1f} | {c / c0:.2f}x | {s:.1f} | {w:.1f} | {w / w0:.2f}x |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--requests", type=int, default=3_000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    if shutil.which("redis-server") is None:
        raise SystemExit("redis-server is not installed (apt-get install redis-server)")
    logger.remove()
    logger.add(sys.stderr, level="WARNING")
    asyncio.run(main(args.concurrency, args.requests, args.rounds))
