"""How much a get_pool_stats() snapshot costs with 100 live connections, beside one request.

Run: uv run python benchmarks/pool_snapshot.py
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time

from aiohttp import web
from loguru import logger

from services.config import HTTPSettings
from services.http_client import HTTPClient

CONNECTIONS = 100
SNAPSHOTS = 2_000
REQUESTS = 500


async def main() -> None:
    logger.remove()
    logger.add(sys.stderr, level="INFO")  # what a bot runs with: the DEBUG line per request is filtered
    release = asyncio.Event()

    async def held(request: web.Request) -> web.Response:
        if request.query.get("hold"):
            await release.wait()
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/", held)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/"
    service = HTTPClient(HTTPSettings(max_connections=CONNECTIONS, max_keepalive_connections=CONNECTIONS))

    burst = [asyncio.create_task(service.get(url, params={"hold": 1})) for _ in range(CONNECTIONS + 20)]
    for _ in range(500):  # bounded wait for the pool to fill
        if service.get_pool_stats().active == CONNECTIONS:
            break
        await asyncio.sleep(0.01)
    busy = service.get_pool_stats()

    def per_snapshot_us() -> float:
        started = time.perf_counter()
        for _ in range(SNAPSHOTS):
            service.get_pool_stats()
        return (time.perf_counter() - started) / SNAPSHOTS * 1e6

    busy_us = statistics.median(per_snapshot_us() for _ in range(5))
    release.set()
    await asyncio.gather(*burst)

    started = time.perf_counter()
    for _ in range(REQUESTS):
        await service.get(url)
    request_us = (time.perf_counter() - started) / REQUESTS * 1e6
    idle_us = statistics.median(per_snapshot_us() for _ in range(5))
    idle = service.get_pool_stats()
    await service.close()
    await runner.cleanup()

    print(f"pool during burst: {busy.connections} connections, {busy.active} active, {busy.queued} queued")
    print(f"pool after burst:  {idle.connections} connections, {idle.idle} idle")
    print(f"snapshot, {busy.connections} busy connections: {busy_us:8.1f} us")
    print(f"snapshot, {idle.connections} idle connections: {idle_us:8.1f} us")
    print(f"one GET over keep-alive (for scale):  {request_us:8.1f} us")
    print(f"ratio snapshot/request: {busy_us / request_us:.2f}")


if __name__ == "__main__":
    asyncio.run(main())
