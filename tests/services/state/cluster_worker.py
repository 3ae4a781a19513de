"""One process of a test cluster: it only imports `http_client` and calls it, settings from the env.

Run as `python -m tests.services.state.cluster_worker '<json plan>'`; prints one JSON line of results.
Plans: {"mode": "hammer", "url", "seconds", "concurrency"} sends as fast as its turns allow;
{"mode": "count", "urls", "requests", "concurrency"} sends a fixed number, cycling through `urls`;
{"mode": "poll", "urls", "seconds", "every"} calls each URL in turn at a steady pace.
A first call to "warm" starts sharing, and the plan begins once it is connected (importing redis-py
and connecting take a while on a busy machine; meanwhile a process runs on its own state).
"together": N also waits until the cluster view lists N processes; "resume": N waits, after the
traffic, until sharing is connected again and the view read back from Redis lists N processes.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter
from typing import Any

from services.errors import RateLimitedError
from services.http_client import http_client


class Tally:
    """Outcomes of the calls this process made."""

    def __init__(self) -> None:
        self.ok = 0
        self.refused = 0  # our own limits or learned blocks said no: expected, not a failure
        self.failed: Counter[str] = Counter()

    async def call(self, url: str) -> None:
        try:
            await http_client.get(url)
            self.ok += 1
        except RateLimitedError:
            self.refused += 1
        except Exception as exc:
            self.failed[f"{type(exc).__name__}: {exc}"] += 1


async def hammer(plan: dict[str, Any], tally: Tally) -> None:
    end = time.monotonic() + plan["seconds"]

    async def loop() -> None:
        while time.monotonic() < end:
            await tally.call(plan["url"])

    await asyncio.gather(*(loop() for _ in range(plan["concurrency"])))


async def count(plan: dict[str, Any], tally: Tally) -> None:
    urls, left = plan["urls"], iter(range(plan["requests"]))

    async def loop() -> None:
        for n in left:
            await tally.call(urls[n % len(urls)])

    await asyncio.gather(*(loop() for _ in range(plan["concurrency"])))


async def poll(plan: dict[str, Any], tally: Tally) -> None:
    end = time.monotonic() + plan["seconds"]
    while time.monotonic() < end:
        for url in plan["urls"]:
            await tally.call(url)
        await asyncio.sleep(plan["every"])


async def connected(seconds: float = 60) -> bool:
    """Wait until sharing through Redis is connected; False if it is not within `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        cluster = http_client.get_pool_stats().cluster
        if cluster is not None and cluster.sharing == "connected":
            return True
        await asyncio.sleep(0.05)
    return False


async def processes_seen(expected: int, seconds: float = 30) -> int:
    """Wait until the cluster view (read back from Redis) lists `expected` processes; return how many."""
    deadline = time.monotonic() + seconds
    seen = 0
    while time.monotonic() < deadline:
        cluster = http_client.get_pool_stats().cluster
        seen = len(cluster.processes) if cluster is not None else 0
        if seen >= expected:
            break
        await asyncio.sleep(0.1)
    return seen


async def main(plan: dict[str, Any]) -> dict[str, Any]:
    tally = Tally()
    # The first call starts sharing (its answer does not matter: the cluster's limit may refuse it).
    await Tally().call(plan["warm"])
    await connected()
    if plan.get("together"):  # start only once every process is connected and has published its figures
        await processes_seen(plan["together"])
    await {"hammer": hammer, "count": count, "poll": poll}[plan["mode"]](plan, tally)
    resumed = None
    peers = None
    if plan.get("resume"):
        resumed = await connected()
        await tally.call(plan["urls"][0])  # one more call, with sharing back
        peers = await processes_seen(plan["resume"])
    stats = http_client.get_pool_stats()
    await http_client.close()
    return {
        "ok": tally.ok,
        "refused": tally.refused,
        "failed": dict(tally.failed),
        "resumed": resumed,
        "peers": peers,
        "shared_hits": stats.cache.shared_hits,
        "fallbacks": stats.cluster.fallbacks if stats.cluster else None,
    }


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(json.loads(sys.argv[1])))), flush=True)
