"""Three processes sharing one redis-server against one upstream on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from services.errors import UpstreamRateLimitedError
from services.http_client import http_client
from tests.redis_server import RedisServer
from tests.services.conftest import FAST
from tests.services.state.conftest import eventually

ROOT = Path(__file__).resolve().parents[3]
# Three interpreters importing redis-py, and a Redis restart, on a shared 2-core machine.
pytestmark = pytest.mark.timeout(180)
Run = Callable[..., Awaitable[list[dict[str, Any]]]]


@dataclass
class Upstream:
    """Counts what it saw, by path and by the worker that asked (X-Worker), with arrival times."""

    base: str = ""
    hits: Counter[str] = field(default_factory=Counter)
    seen: list[tuple[float, str, str]] = field(default_factory=list)  # (monotonic, worker, path)


@pytest.fixture
async def upstream(local_server) -> Upstream:
    seen = Upstream()
    reset = str(int(time.time()) + 600)

    async def count(request: web.Request) -> None:
        seen.hits[request.path] += 1
        seen.seen.append((time.monotonic(), request.headers.get("x-worker", ""), request.path))

    async def plain(request: web.Request) -> web.Response:
        await count(request)
        return web.Response(text="ok")

    async def warm(request: web.Request) -> web.Response:
        return web.Response(text="warm")

    async def cached(request: web.Request) -> web.Response:
        await count(request)
        return web.Response(text="cached", headers={"Cache-Control": "max-age=60"})

    async def search(request: web.Request) -> web.Response:
        await count(request)
        quota = {"X-RateLimit-Resource": "search", "X-RateLimit-Reset": reset}
        if request.headers.get("x-worker") == "learner":  # only one process is told: the others must hear it
            return web.Response(status=403, headers={**quota, "X-RateLimit-Remaining": "0"})
        return web.Response(text="found", headers={**quota, "X-RateLimit-Remaining": "9"})

    async def core(request: web.Request) -> web.Response:
        await count(request)
        headers = {
            "X-RateLimit-Resource": "core",
            "X-RateLimit-Remaining": "4000",
            "X-RateLimit-Reset": reset,
        }
        return web.Response(text="repo", headers=headers)

    seen.base = await local_server(
        {"/warm": warm, "/plain": plain, "/cached": cached, "/search/code": search, "/repos/a/b": core}
    )
    return seen


@pytest.fixture
def run_workers(redis_server: RedisServer, tmp_path: Path) -> Run:
    """Start worker processes with the given env and plans; return their results once all exit."""

    async def run(plans: list[dict[str, Any]], warm: str, **env: str) -> list[dict[str, Any]]:
        procs = []
        for n, plan in enumerate(plans):
            environ = {
                **os.environ,
                "REDIS_URL": redis_server.url,
                "COURIER_INSTANCE": f"worker-{n}",
                "COURIER_REDIS_TIMEOUT": "0.5",  # a loaded test machine is not a slow Redis
                "HTTP_RETRIES": "0",
                "HTTP_BREAKER_THRESHOLD": "0",
                "LOG_LEVEL": "WARNING",
                **env,
            }
            with (tmp_path / f"worker-{n}.log").open("wb") as log:
                procs.append(
                    await asyncio.create_subprocess_exec(
                        sys.executable,
                        "-m",
                        "tests.services.state.cluster_worker",
                        json.dumps({**plan, "warm": warm}),
                        cwd=ROOT,
                        env=environ,
                        stdout=asyncio.subprocess.PIPE,
                        stderr=log,
                    )
                )
        results = []
        for n, proc in enumerate(procs):
            out, _ = await asyncio.wait_for(proc.communicate(), 150)
            assert proc.returncode == 0, (tmp_path / f"worker-{n}.log").read_text()[-3000:]
            results.append(json.loads(out.decode().strip().splitlines()[-1]))
        return results

    return run


async def test_cluster_configured_limit_holds_across_three_processes(upstream, run_workers):
    # 5/s across the cluster; each process alone would allow 5/s too, so three unshared would send ~3x.
    started = time.monotonic()
    plan = {"mode": "hammer", "url": f"{upstream.base}/plain", "seconds": 4, "concurrency": 4, "together": 3}
    results = await run_workers(
        [plan] * 3, f"{upstream.base}/warm", HTTP_HOST_LIMITS="127.0.0.1=5/s", HTTP_MAX_WAIT="1"
    )
    window = time.monotonic() - started
    assert all(not r["failed"] for r in results), results
    assert sum(r["ok"] for r in results) == upstream.hits["/plain"] >= 10, results
    # Every turn was granted inside the window: at most 5/s, plus the bucket's burst (5, as in-process).
    assert upstream.hits["/plain"] <= 5 * window + 5, (upstream.hits["/plain"], window)


async def test_cluster_search_block_learned_by_one_stops_the_others(upstream, run_workers, redis_server):
    http_client.configure(replace(FAST, redis_url=redis_server.url, redis_timeout=0.5, instance="learner"))
    urls = [f"{upstream.base}/search/code?q=x", f"{upstream.base}/repos/a/b"]
    plan = {"mode": "poll", "urls": urls, "seconds": 6, "every": 0.05}
    workers = asyncio.ensure_future(run_workers([plan] * 2, f"{upstream.base}/warm"))
    # Wait until the pollers are calling search (so they run, and know its partition).
    await eventually(lambda: upstream.hits["/search/code"] >= 4, seconds=30)
    with pytest.raises(UpstreamRateLimitedError):
        await http_client.get(urls[0], headers={"X-Worker": "learner"})
    blocked_at = time.monotonic()
    results = await workers
    late_search = [
        t - blocked_at for t, w, p in upstream.seen if p == "/search/code" and w == "" and t > blocked_at + 1
    ]
    late_core = [t for t, w, p in upstream.seen if p == "/repos/a/b" and t > blocked_at + 1]
    assert late_search == []
    assert len(late_core) >= 10  # core kept flowing from both
    assert all(not r["failed"] and r["refused"] >= 1 for r in results), results


async def test_cluster_answer_stored_by_one_process_serves_another(upstream, run_workers, redis_server):
    http_client.configure(replace(FAST, redis_url=redis_server.url, redis_timeout=0.5, instance="storer"))
    assert (await http_client.get(f"{upstream.base}/cached")).text == "cached"
    admin = redis_server.admin()
    try:
        await eventually(lambda: admin.zcard("courier:v1:cache:index"))
    finally:
        await admin.aclose()
    plan = {"mode": "count", "urls": [f"{upstream.base}/cached"], "requests": 1, "concurrency": 1}
    [result] = await run_workers([plan], f"{upstream.base}/warm")
    assert result["ok"] == 1 and result["shared_hits"] == 1
    assert upstream.hits["/cached"] == 1


async def test_cluster_redis_killed_mid_run_fails_no_call_and_sharing_resumes(
    upstream, run_workers, redis_server
):
    urls = [f"{upstream.base}/plain?i={i}" for i in range(20)] + [
        f"{upstream.base}/cached?i={i}" for i in range(5)
    ]
    plan = {"mode": "count", "urls": urls, "requests": 1500, "concurrency": 8, "together": 3, "resume": 3}
    # Every call goes through the cluster-wide limit (a generous one), so Redis is on every call's path.
    workers = asyncio.ensure_future(
        run_workers([plan] * 3, f"{upstream.base}/warm", HTTP_HOST_LIMITS="127.0.0.1=100000/s")
    )
    # All three are connected and sending (they start together) before Redis dies under them.
    await eventually(lambda: sum(upstream.hits.values()) >= 600, seconds=120)
    redis_server.kill()
    killed_at = sum(upstream.hits.values())
    await eventually(lambda: sum(upstream.hits.values()) >= killed_at + 1500, seconds=120)
    redis_server.start()
    results = await workers
    assert [r["failed"] for r in results] == [{}, {}, {}]
    assert sum(r["ok"] for r in results) == 3 * 1500 + 3
    # Sharing resumed everywhere: each saw all three in the figures written to the restarted (empty) Redis.
    assert [(r["resumed"], r["peers"]) for r in results] == [(True, 3)] * 3, results
