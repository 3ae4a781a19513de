"""Isolation: does one slow upstream starve the requests that go to the others?

Run: `uv run python benchmarks/isolation.py` (about two minutes; `--seconds` shortens each phase).
Ten upstreams on 127.0.0.1 (raw asyncio servers in a child process) answer in 20-50 ms. The service
sends GETs to them round-robin, open-loop at a fixed rate (latency counts from when a request was due,
so a stalled client can't hide its backlog), first with every upstream fast, then with upstream 0 at 2 s.
Upstream 0 takes a quarter of the requests (`--share`): at a tenth, 2 s answers need fewer connections
than the pool's 100 at these rates and nothing queues, so the run would not test isolation at all.
Reported per rate: the other upstreams' p99 with the slow one relative to without it (goal: within 2x),
their failures (goal: 0), and how the slow upstream's requests ended (goal: fast, typed failures once its
share of the pool is used). With `--overload RATE` it also steps to RATE with the slow upstream on and
prints the process RSS before, at the peak, and a few seconds after the step ends.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import gc
import multiprocessing
import random
import statistics
import tracemalloc
from collections import Counter
from dataclasses import dataclass, field
from multiprocessing.connection import Connection

from loguru import logger

from services.config import HTTPSettings
from services.http_client import HTTPClient

UPSTREAMS = 10
SLOW_SECONDS = 2.0
BODY = b'{"ok":true}'


# --- the upstreams (child process) ------------------------------------------------------------


async def _serve_one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            path = head.split(b" ", 2)[1]
            await asyncio.sleep(SLOW_SECONDS if path.startswith(b"/slow") else random.uniform(0.02, 0.05))
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nCache-Control: no-store\r\n"
                b"Content-Length: %d\r\n\r\n%b" % (len(BODY), BODY)
            )
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


def _upstreams(pipe: Connection) -> None:
    async def main() -> None:
        servers = [
            await asyncio.start_server(_serve_one, "127.0.0.1", 0, backlog=1024) for _ in range(UPSTREAMS)
        ]
        pipe.send([s.sockets[0].getsockname()[1] for s in servers])
        await asyncio.get_running_loop().run_in_executor(None, pipe.recv)  # until told to stop

    asyncio.run(main())


# --- the load ---------------------------------------------------------------------------------


@dataclass
class Phase:
    """What one phase saw: latencies and outcomes of the other upstreams and of the slow one."""

    other_ms: list[float] = field(default_factory=list)
    other_errors: Counter[str] = field(default_factory=Counter)
    slow_ms: list[float] = field(default_factory=list)
    slow_outcomes: Counter[str] = field(default_factory=Counter)
    slow_fail_ms: list[float] = field(default_factory=list)
    messages: Counter[str] = field(default_factory=Counter)


async def _one(service: HTTPClient, url: str, due: float, slow: bool, phase: Phase | None) -> None:
    loop = asyncio.get_running_loop()
    try:
        await service.get(url)
    except Exception as exc:
        elapsed = (loop.time() - due) * 1000
        if phase is None:
            return
        kind = type(exc).__name__
        if slow:
            phase.slow_outcomes[kind] += 1
            phase.slow_fail_ms.append(elapsed)
            phase.messages[getattr(exc, "user_message", str(exc))] += 1
        else:
            phase.other_errors[kind] += 1
            phase.other_ms.append(elapsed)
        return
    elapsed = (loop.time() - due) * 1000
    if phase is None:
        return
    if slow:
        phase.slow_outcomes["ok"] += 1
        phase.slow_ms.append(elapsed)
    else:
        phase.other_ms.append(elapsed)


async def load(
    service: HTTPClient,
    ports: list[int],
    rate: float,
    seconds: float,
    *,
    slow: bool,
    phase: Phase | None,
    share: float = 0.1,
) -> list[asyncio.Task[None]]:
    """Start requests open-loop at `rate` per second for `seconds`; return their tasks."""
    loop = asyncio.get_running_loop()
    tasks: list[asyncio.Task[None]] = []
    start = loop.time()
    count = int(rate * seconds)
    for i in range(count):
        due = start + i / rate
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        # Upstream 0 takes `share` of the requests, spread evenly; the rest go round the others.
        host = 0 if int((i + 1) * share) > int(i * share) else 1 + i % (len(ports) - 1)
        is_slow = slow and host == 0
        url = f"http://127.0.0.1:{ports[host]}/{'slow' if is_slow else 'fast'}/{i}"
        tasks.append(asyncio.create_task(_one(service, url, due, is_slow, phase)))
    return tasks


def p99(values: list[float]) -> float:
    """Nearest-rank 99th percentile."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[max(0, int(len(ordered) * 0.99 + 0.5) - 1)]


def malloc_trim() -> float:
    """Ask glibc to return freed heap to the system; the RSS after, in MiB."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    return rss_mib()


def rss_mib() -> float:
    """This process's resident set, in MiB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


async def run_rate(ports: list[int], rate: float, seconds: float, share: float) -> tuple[Phase, Phase]:
    """One service: warm up, a phase with every upstream fast, then one with upstream 0 slow."""
    service = HTTPClient(HTTPSettings.from_env())
    try:
        await asyncio.gather(*await load(service, ports, rate, 2.0, slow=False, phase=None, share=share))
        fast, slow = Phase(), Phase()
        await asyncio.gather(*await load(service, ports, rate, seconds, slow=False, phase=fast, share=share))
        tasks = await load(service, ports, rate, seconds, slow=True, phase=slow, share=share)
        await asyncio.wait(tasks, timeout=45)
        return fast, slow
    finally:
        await service.close()


def report(rate: float, fast: Phase, slow: Phase) -> None:
    """Print one rate's figures."""
    base, hit = p99(fast.other_ms), p99(slow.other_ms)
    fails = sum(slow.other_errors.values())
    total_slow = sum(slow.slow_outcomes.values())
    print(f"\n## {rate:g} requests/s")
    print("| | others' p99 | others' failures | slow upstream ok / failed | failed after (median, p99) |")
    print("|---|---:|---:|---:|---:|")
    print(f"| all fast | {base:.0f} ms | {sum(fast.other_errors.values())} of {len(fast.other_ms)} | | |")
    failed = total_slow - slow.slow_outcomes["ok"]
    after = (
        f"{statistics.median(slow.slow_fail_ms):.0f} ms, {p99(slow.slow_fail_ms):.0f} ms"
        if slow.slow_fail_ms
        else "n/a"
    )
    print(
        f"| upstream 0 at {SLOW_SECONDS:g} s | {hit:.0f} ms (**{hit / base:.2f}x**) | {fails} of "
        f"{len(slow.other_ms)} | {slow.slow_outcomes['ok']} / {failed} | {after} |"
    )
    kinds = {k: v for k, v in slow.slow_outcomes.items() if k != "ok"}
    print(
        f"slow upstream failures by type: {dict(kinds) or 'none'}; other failures: {dict(slow.other_errors)}"
    )
    for message, count in slow.messages.most_common(2):
        print(f"  user sees ({count}): {message}")


async def overload(ports: list[int], rate: float, seconds: float, share: float, *, trace: bool) -> None:
    """Step to `rate` with the slow upstream on, and follow RSS before, during and after."""
    service = HTTPClient(HTTPSettings.from_env())
    try:
        await asyncio.gather(*await load(service, ports, 100, 2.0, slow=False, phase=None))
        gc.collect()
        if trace:
            tracemalloc.start(8)
            baseline = tracemalloc.take_snapshot()
        before = rss_mib()
        peak = before
        phase = Phase()

        async def watch() -> None:
            nonlocal peak
            while True:
                peak = max(peak, rss_mib())
                await asyncio.sleep(0.1)

        watcher = asyncio.create_task(watch())
        tasks = await load(service, ports, rate, seconds, slow=True, phase=phase, share=share)
        await asyncio.wait(tasks, timeout=45)
        watcher.cancel()
        await asyncio.sleep(3)
        gc.collect()
        after = rss_mib()
        trimmed = malloc_trim()
        stats = service.get_pool_stats()
        print(f"\n## overload: {rate:g} requests/s for {seconds:g} s, upstream 0 slow")
        print(
            f"RSS: {before:.0f} MiB before, {peak:.0f} MiB peak, {after:.0f} MiB 3 s after the step, "
            f"{trimmed:.0f} MiB after malloc_trim(0) (what glibc kept but Python had freed)"
        )
        others = len(phase.other_ms)
        print(
            f"other upstreams: p99 {p99(phase.other_ms):.0f} ms, "
            f"failures {dict(phase.other_errors)} of {others}; "
            f"slow upstream: {dict(phase.slow_outcomes)}"
        )
        print(f"pool after: {stats.connections} connections, {stats.queued} queued")
        if trace:
            top = tracemalloc.take_snapshot().compare_to(baseline, "traceback")
            print(f"Python heap after vs before: {sum(d.size_diff for d in top) / 2**20:+.1f} MiB; largest:")
            for diff in top[:6]:
                where = diff.traceback[-1]
                print(f"  {diff.size_diff / 1024:+,.0f} KiB in {diff.count_diff:+,} blocks at {where}")
    finally:
        await service.close()


async def main(args: argparse.Namespace) -> None:
    """Start the upstreams, run every rate, print the tables."""
    parent, child = multiprocessing.Pipe()
    process = multiprocessing.Process(target=_upstreams, args=(child,), daemon=True)
    process.start()
    ports = parent.recv()
    try:
        print(
            f"{UPSTREAMS} upstreams on 127.0.0.1 at 20-50 ms; phases of {args.seconds:g} s, open loop; "
            f"upstream 0 takes {args.share:.0%} of the requests"
        )
        for rate in args.rates:
            fast, slow = await run_rate(ports, rate, args.seconds, args.share)
            report(rate, fast, slow)
        if args.overload:
            await overload(ports, args.overload, args.seconds, args.share, trace=args.trace)
    finally:
        parent.send("stop")
        process.join(timeout=5)
        if process.is_alive():
            process.kill()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", type=float, nargs="*", default=[300.0, 400.0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument(
        "--share", type=float, default=0.25, help="share of requests for upstream 0 (GitHub is the busiest)"
    )
    parser.add_argument("--overload", type=float, default=0.0, help="also step to this rate (e.g. 600)")
    parser.add_argument("--trace", action="store_true", help="with --overload: what the Python heap kept")
    logger.remove()  # the service logs every retry and failure; the tables are the output here
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(parser.parse_args()))
