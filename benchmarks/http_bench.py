"""Client CPU per request against nginx on loopback: Courier vs pyreqwest, aiohttp, httpx and raw asyncio.

Run: `uv run --group bench python benchmarks/http_bench.py` (add `--quick` for a run of a few minutes); the
`bench` dependency group brings pyreqwest, which nothing but this script uses.
Starts nginx from a temp prefix on 127.0.0.1 (plain HTTP/1.1, and TLS offering HTTP/2), measures each
cell in a fresh process with `time.process_time()`, interleaves the variants over several rounds and
prints the medians as markdown tables; each ratio is the median of per-round ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import urlsplit

import trustme

ROOT = Path(__file__).resolve().parent.parent
# Every client gets aiohttp's default pool policy: 100 connections, all kept alive between requests.
# With httpx's default of 20 kept alive, the pause between warm-up and measurement closes 80 of 100
# connections, and reopening them (TLS handshakes included) would be measured instead of requests.
POOL = 100
SMALL = '{"id":1,"name":"courier","ok":true,"tags":["a","b","c"]}'
LARGE_SIZE = 100 * 1024

NGINX_CONF = """
worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    keepalive_requests 10000000;
    keepalive_timeout 120s;
    server {{
        listen 127.0.0.1:{http_port};
        listen 127.0.0.1:{tls_port} ssl http2;
        ssl_certificate {tmp}/server.pem;
        ssl_certificate_key {tmp}/server.key;
        root {tmp}/www;
        # Keeps Courier's HTTP cache out of the measurement: every GET goes to the wire.
        add_header Cache-Control no-store always;
        location = /small.json {{
            default_type application/json;
            return 200 '{small}';
        }}
        location = /large.bin {{
            default_type application/octet-stream;
        }}
        # The same bytes, stored by a cache but revalidated on every use: nginx answers 304.
        location = /etag.bin {{
            default_type application/octet-stream;
            add_header Cache-Control no-cache always;
        }}
    }}
}}
"""


# --- nginx ----------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ensure_nginx() -> str:
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
    if found:
        return found
    print("nginx not found: installing the Debian package", file=sys.stderr)
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    # A fresh machine may have no package lists yet: without them the install finds no nginx.
    subprocess.run([*sudo, "apt-get", "update", "-qq"], check=True)
    subprocess.run([*sudo, "apt-get", "install", "-y", "-qq", "nginx"], check=True)
    return shutil.which("nginx") or "/usr/sbin/nginx"


def start_nginx(tmp: Path) -> tuple[subprocess.Popen[bytes], int, int, Path]:
    nginx = ensure_nginx()
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert.cert_chain_pems[0].write_to_path(str(tmp / "server.pem"))
    for extra in cert.cert_chain_pems[1:]:
        with open(tmp / "server.pem", "ab") as f:
            f.write(extra.bytes())
    cert.private_key_pem.write_to_path(str(tmp / "server.key"))
    ca.cert_pem.write_to_path(str(tmp / "ca.pem"))
    www = tmp / "www"
    www.mkdir()
    large = os.urandom(LARGE_SIZE)
    (www / "large.bin").write_bytes(large)
    (www / "etag.bin").write_bytes(large)
    for path in (tmp, www):
        path.chmod(0o755)  # nginx workers may run as another user
    (www / "large.bin").chmod(0o644)
    (www / "etag.bin").chmod(0o644)
    http_port, tls_port = free_port(), free_port()
    conf = tmp / "nginx.conf"
    conf.write_text(NGINX_CONF.format(tmp=tmp, http_port=http_port, tls_port=tls_port, small=SMALL))
    proc = subprocess.Popen([nginx, "-p", str(tmp), "-c", str(conf)], stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    for port in (http_port, tls_port):
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"nginx did not start; see {tmp}/error.log") from None
                time.sleep(0.05)
    return proc, http_port, tls_port, tmp / "ca.pem"


# --- one cell, in its own process -----------------------------------------------------------------


def client_ssl(ca: str) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=ca)
    context.set_alpn_protocols(["http/1.1"])
    return context


async def make_courier(
    url: str, ca: str, env: dict[str, str]
) -> tuple[Callable[[], Awaitable[int]], Callable]:
    from loguru import logger  # noqa: PLC0415 - each cell process loads only what it measures

    from services.config import HTTPSettings  # noqa: PLC0415 - each cell process loads only what it measures
    from services.http_client import HTTPClient  # noqa: PLC0415 - each cell process loads only what it measures

    logger.remove()
    logger.add(sys.stderr, level="INFO")  # what a bot runs with: DEBUG request lines filtered
    # Every client gets the same pool: without a per-host setting, Courier's bulkhead gives one host half.
    pool = {"HTTP_MAX_KEEPALIVE_CONNECTIONS": str(POOL), "HTTP_MAX_CONNECTIONS_PER_HOST": str(POOL)}
    service = HTTPClient(HTTPSettings.from_env({"HTTP_CA_BUNDLE": ca, **pool, **env}))

    async def one() -> int:
        response = await service.get(url)
        return len(response.content)

    one.connections = lambda: service.get_pool_stats().connections  # type: ignore[attr-defined]
    return one, service.close


async def make_httpx(url: str, ca: str, http2: bool) -> tuple[Callable[[], Awaitable[int]], Callable]:
    import httpx  # noqa: PLC0415 - each cell process loads only what it measures

    limits = httpx.Limits(max_connections=POOL, max_keepalive_connections=POOL)
    client = httpx.AsyncClient(verify=ssl.create_default_context(cafile=ca), http2=http2, limits=limits)

    async def one() -> int:
        response = await client.get(url)
        return len(response.content)

    return one, client.aclose


async def make_aiohttp(url: str, ca: str) -> tuple[Callable[[], Awaitable[int]], Callable]:
    import aiohttp  # noqa: PLC0415 - each cell process loads only what it measures

    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=client_ssl(ca)))

    async def one() -> int:
        async with session.get(url) as response:
            return len(await response.read())

    return one, session.close


async def make_pyreqwest(url: str, ca: str) -> tuple[Callable[[], Awaitable[int]], Callable]:
    from pyreqwest.client import ClientBuilder  # noqa: PLC0415 - each cell process loads only what it measures

    # Rust (hyper + rustls) on its own Tokio runtime thread; process_time() counts that thread too.
    client = (
        ClientBuilder()
        .add_root_certificate_pem(Path(ca).read_bytes())  # noqa: ASYNC240 - once, before measuring
        .http1_only()
        .pool_max_idle_per_host(POOL)
        .build()
    )

    async def one() -> int:
        response = await client.get(url).build().send()
        return len(await response.bytes())

    return one, client.close


class RawPool:
    """The floor: one kept-alive asyncio stream per worker and a hand-written request."""

    def __init__(self, url: str, ca: str) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.tls = client_ssl(ca) if parts.scheme == "https" else None
        self.request = f"GET {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\n\r\n".encode()
        self.free: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.all: list[asyncio.StreamWriter] = []

    async def one(self) -> int:
        if self.free:
            reader, writer = self.free.pop()
        else:
            reader, writer = await asyncio.open_connection(
                self.host, self.port, ssl=self.tls, server_hostname=self.host if self.tls else None
            )
            self.all.append(writer)
        writer.write(self.request)
        head = await reader.readuntil(b"\r\n\r\n")
        start = head.lower().index(b"content-length:") + 15
        length = int(head[start : head.index(b"\r\n", start)])
        body = await reader.readexactly(length)
        self.free.append((reader, writer))
        return len(body)

    async def close(self) -> None:
        for writer in self.all:
            writer.close()


async def build(variant: str, url: str, ca: str) -> tuple[Callable[[], Awaitable[int]], Callable]:
    if variant in ("courier", "courier-asyncio"):
        return await make_courier(url, ca, {})
    if variant == "courier-h2":
        return await make_courier(url, ca, {"HTTP_HTTP2": "true"})
    if variant == "courier-httpcore":
        return await make_courier(url, ca, {"HTTP_TRANSPORT": "httpcore"})
    if variant == "httpx":
        return await make_httpx(url, ca, http2=False)
    if variant == "httpx-h2":
        return await make_httpx(url, ca, http2=True)
    if variant in ("aiohttp", "aiohttp-uvloop"):
        return await make_aiohttp(url, ca)
    if variant == "pyreqwest":
        return await make_pyreqwest(url, ca)
    if variant == "raw":
        pool = RawPool(url, ca)
        return pool.one, pool.close
    raise SystemExit(f"unknown variant {variant}")


async def run_workers(
    one: Callable[[], Awaitable[int]], requests: int, concurrency: int, min_seconds: float = 0.0
) -> int:
    """Send `requests` split over `concurrency` workers, repeating (bounded) until `min_seconds` passed."""
    per_worker = max(1, requests // concurrency)
    until = time.perf_counter() + min_seconds
    sent = 0
    for _ in range(100):  # the bound: a lag burst repeats at most 100 times
        sent += per_worker * concurrency

        async def worker() -> None:
            for _ in range(per_worker):
                await one()

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        if time.perf_counter() >= until:
            break
    return sent


async def run_paced(one: Callable[[], Awaitable[int]], rate: float, seconds: float, concurrency: int) -> int:
    """Offer `rate` requests a second for `seconds`, at most `concurrency` at once, as a bot's load comes."""
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(concurrency)
    running: set[asyncio.Task[int]] = set()
    total = int(rate * seconds)
    start = loop.time()
    for i in range(total):
        await asyncio.sleep(max(0.0, start + i / rate - loop.time()))
        await gate.acquire()
        task = asyncio.create_task(one())
        running.add(task)
        task.add_done_callback(lambda t: (running.discard(t), gate.release()))
    await asyncio.gather(*running)
    return total


def rss_mib() -> float:
    """This process's resident set size in MiB (Linux; 0 elsewhere)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


async def measure_cell(
    variant: str, url: str, ca: str, requests: int, concurrency: int, lag: bool, rate: float = 0.0
) -> dict:
    rss = rss_mib()
    one, close = await build(variant, url, ca)
    try:
        await run_workers(one, max(concurrency * 5, requests // 10), concurrency)  # warm up the pool
        delays: list[float] = []
        done = False

        async def ticker() -> None:
            loop = asyncio.get_running_loop()
            while not done:
                before = loop.time()
                await asyncio.sleep(0.01)
                delays.append(loop.time() - before - 0.01)

        tick = asyncio.create_task(ticker()) if lag else None
        cpu, wall = time.process_time(), time.perf_counter()
        if rate:
            sent = await run_paced(one, rate, LAG_SECONDS, concurrency)
        else:
            sent = await run_workers(one, requests, concurrency, LAG_SECONDS if lag else 0.0)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        connections = one.connections() if hasattr(one, "connections") else None  # Courier's pool, live
        rss = rss_mib() - rss
        done = True
        if tick is not None:
            await tick
    finally:
        result = close()
        if asyncio.iscoroutine(result):
            await result
    ordered = sorted(delays)
    p99 = ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)] if ordered else None
    return {
        "cpu": cpu,
        "wall": wall,
        "requests": sent,
        "lag_p99": p99,
        "rss": rss,
        "connections": connections,
    }


def cell_loop(variant: str) -> str:
    """The event loop a cell runs on: Courier's on the bot's default (EVENT_LOOP), peers on asyncio's."""
    from bot.event_loop import default_event_loop  # noqa: PLC0415 - after sys.path has the project

    if variant == "courier-asyncio":
        return "asyncio"
    if variant.startswith("courier") or variant.endswith("-uvloop"):
        return default_event_loop()
    return "asyncio"


def cell_main(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(ROOT))
    from bot.event_loop import loop_factory  # noqa: PLC0415 - after sys.path has the project

    cell = measure_cell(args.variant, args.url, args.ca, args.requests, args.concurrency, args.lag, args.rate)
    with asyncio.Runner(loop_factory=loop_factory(cell_loop(args.variant))) as runner:
        result = runner.run(cell)
    print(json.dumps(result), flush=True)
    if args.variant == "pyreqwest":
        # Its Tokio thread can abort the interpreter's finalization (PyGILState_Release); the figures
        # are out, so skip it.
        os._exit(0)


# --- the driver -----------------------------------------------------------------------------------


def run_cell(
    variant: str, url: str, ca: str, requests: int, concurrency: int, lag: bool = False, rate: float = 0.0
) -> dict:
    command = [
        sys.executable,
        __file__,
        "--cell",
        "--variant",
        variant,
        "--url",
        url,
        "--ca",
        ca,
        "--requests",
        str(requests),
        "--concurrency",
        str(concurrency),
    ]
    if lag:
        command.append("--lag")
    if rate:
        command += ["--rate", str(rate)]
    out = subprocess.run(command, capture_output=True, text=True, timeout=900, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{variant} c={concurrency} {url} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def fmt_ratio(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}x"


def print_table(title: str, variants: list[str], levels: list[int], cells: dict) -> None:
    print(f"\n### {title}\n")
    cpu = {
        (v, c): statistics.median(r["cpu"] / r["requests"] * 10_000 for r in cells[v, c])
        for v in variants
        for c in levels
    }
    rps = {
        (v, c): statistics.median(r["requests"] / r["wall"] for r in cells[v, c])
        for v in variants
        for c in levels
    }

    def ratio(v: str, c: int, base: str) -> float | None:
        # Per round, against the base's cell of the same round (run minutes apart at most), then the
        # median: on a shared machine a cell's CPU drifts by up to 2x over a run, for every client.
        if (base, c) not in cells:
            return None
        pairs = zip(cells[v, c], cells[base, c], strict=True)
        return statistics.median((a["cpu"] / a["requests"]) / (b["cpu"] / b["requests"]) for a, b in pairs)

    head = " | ".join(f"c={c} CPU s/10k | req/s | vs {BASES[0]} | vs {BASES[1]} | RSS +MiB" for c in levels)
    print(f"| client | {head} |")
    print("|---|" + "---:|" * (5 * len(levels)))
    for v in variants:
        row = []
        for c in levels:
            rss = statistics.median(r.get("rss", 0.0) for r in cells[v, c])
            row += [
                f"{cpu[v, c]:.2f}",
                f"{rps[v, c]:.0f}",
                *(fmt_ratio(ratio(v, c, base)) for base in BASES),
                f"{rss:.0f}",
            ]
        print(f"| {v} | " + " | ".join(row) + " |")


def driver(args: argparse.Namespace) -> None:
    levels = [int(c) for c in args.levels.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="courier-nginx-"))
    proc, http_port, tls_port, ca = start_nginx(tmp)
    try:
        small_url = f"http://127.0.0.1:{http_port}/small.json"
        suites = [
            ("plain HTTP/1.1, small JSON", small_url, args.requests, PLAIN),
            (
                "plain HTTP/1.1, 100 KB body",
                f"http://127.0.0.1:{http_port}/large.bin",
                args.large_requests,
                PLAIN,
            ),
            (
                "plain HTTP/1.1, 100 KB body with ETag and no-cache (Courier's cache revalidates: 304s)",
                f"http://127.0.0.1:{http_port}/etag.bin",
                args.large_requests,
                REVALIDATED,
            ),
            (
                "TLS (nginx offers HTTP/2), small JSON",
                f"https://127.0.0.1:{tls_port}/small.json",
                args.requests,
                TLS,
            ),
        ]
        suites.append(
            (
                "TLS (nginx offers HTTP/2), 100 KB body",
                f"https://127.0.0.1:{tls_port}/large.bin",
                args.large_requests,
                TLS,
            )
        )
        everything = [*SUITES, "lag"]
        wanted = args.suites.split(",") if args.suites else everything
        if args.quick and not args.suites:
            wanted.remove("tls-large")
        suites = [suite for name, suite in zip(SUITES, suites, strict=True) if name in wanted]
        if args.variants:
            chosen = args.variants.split(",")
            suites = [(t, u, r, [v for v in vs if v in chosen]) for t, u, r, vs in suites]
        lag_variants = [v for v in LAG_VARIANTS if not args.variants or v in args.variants.split(",")]
        if "lag" not in wanted:
            lag_variants = []
        print(
            f"nginx {http_port}/{tls_port}; {args.rounds} rounds; median of per-cell figures", file=sys.stderr
        )
        results: dict[str, dict] = {title: {} for title, *_ in suites}
        lag: dict[str, list[float]] = {v: [] for v in lag_variants}
        paced: dict[str, list[dict]] = {v: [] for v in lag_variants}
        for round_no in range(args.rounds):
            for title, url, requests, variants in [] if args.lag_only else suites:
                for c in levels:
                    # Interleaved, with the order rotating per round, so drift hits every variant alike.
                    shift = round_no % len(variants)
                    for v in variants[shift:] + variants[:shift]:
                        cell = run_cell(v, url, str(ca), requests, c)
                        results[title].setdefault((v, c), []).append(cell)
                        print(
                            f"round {round_no + 1} {title} c={c} {v}: "
                            f"{cell['cpu'] / cell['requests'] * 10_000:.2f} s/10k",
                            file=sys.stderr,
                        )
            for v in lag_variants:
                cell = run_cell(v, small_url, str(ca), args.requests, 100, lag=True)
                lag[v].append(cell["lag_p99"] * 1000)
                paced[v].append(run_cell(v, small_url, str(ca), 0, 100, lag=True, rate=PACED_RATE))
        print(
            f"\nClient CPU seconds per 10,000 requests (median of {args.rounds} rounds), req/s, and CPU "
            f"ratios (median of the per-round ratios); every pool keeps up to {POOL} connections alive."
        )
        for title, _, _, variants in [] if args.lag_only else suites:
            print_table(title, variants, levels, results[title])
            counts = {
                f"{v} c={c}": sorted({cell["connections"] for cell in cells})
                for (v, c), cells in results[title].items()
                if v.startswith("courier") and cells[0].get("connections") is not None
            }
            if counts:
                print(
                    "\nConnections open at the end of each cell: "
                    + "; ".join(f"{k}: {v}" for k, v in counts.items())
                )
        if not lag_variants:
            return
        print(
            f"\n### Event-loop lag over {LAG_SECONDS:g} s at c=100, flat out and at a rate a bot sees, plain "
            "HTTP/1.1 small JSON (p99 delay of a 10 ms timer, median of rounds)\n"
        )
        print(
            f"| client | p99 lag ms, flat out | p99 lag ms, {PACED_RATE:g} req/s offered "
            "| CPU s/10k at that rate |"
        )
        print("|---|---:|---:|---:|")
        for v in lag_variants:
            paced_lag = statistics.median(c["lag_p99"] * 1000 for c in paced[v])
            paced_cpu = statistics.median(c["cpu"] / c["requests"] * 10_000 for c in paced[v])
            print(f"| {v} | {statistics.median(lag[v]):.1f} | {paced_lag:.1f} | {paced_cpu:.2f} |")
    finally:
        proc.send_signal(signal.SIGQUIT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)


PEERS = ["courier", "courier-asyncio", "pyreqwest", "aiohttp", "aiohttp-uvloop", "httpx"]
PLAIN = [*PEERS, "courier-httpcore", "raw"]
TLS = [*PEERS, "courier-h2", "courier-httpcore", "httpx-h2", "raw"]
# Courier's cache answers from a 304; the peers, without a cache, fetch the body every time.
REVALIDATED = ["courier", "pyreqwest", "aiohttp"]
# What --quick runs: Courier on both loops, the goal's peers and the floor.
CORE = ("courier", "courier-asyncio", "pyreqwest", "aiohttp", "httpx", "raw")
BASES = ("pyreqwest", "aiohttp")  # each cell's CPU as a ratio to these clients' cell of the same round
LAG_VARIANTS = ["courier", "courier-asyncio", "pyreqwest", "aiohttp", "httpx"]
# --suites names, in the order of the driver's suites (and "lag", the event-loop lag table).
SUITES = ("small", "large", "revalidate", "tls", "tls-large")
PACED_RATE = 500.0  # below what every client sustains at c=100, so all do the same work
LAG_SECONDS = 3.0  # long enough for ~300 timer samples, so the p99 is not just the maximum


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, help="rounds of interleaved cells (default 3; --quick 1)")
    parser.add_argument("--requests", type=int, default=10_000, help="small-body requests per cell")
    parser.add_argument("--large-requests", type=int, default=2_000, help="100 KB requests per cell")
    parser.add_argument("--levels", default="1,10,100", help="concurrency levels (default 1,10,100)")
    parser.add_argument("--lag-only", action="store_true", help="only the event-loop lag table")
    parser.add_argument(
        "--suites",
        help=f"comma-separated suites of {', '.join(SUITES)}, lag (default all; --quick: all but tls-large)",
    )
    parser.add_argument("--variants", help="comma-separated clients (default all; --quick: the peers)")
    parser.add_argument(
        "--quick", action="store_true", help="1 round, 3000 requests, the peers only, no TLS 100 KB suite"
    )
    parser.add_argument("--cell", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--ca", help=argparse.SUPPRESS)
    parser.add_argument("--concurrency", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--lag", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--rate", type=float, default=0.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.cell:
        cell_main(args)
        return
    args.rounds = args.rounds or (1 if args.quick else 3)
    if args.quick:
        args.requests, args.large_requests = 3_000, 600
        args.variants = args.variants or ",".join(CORE)
    driver(args)


if __name__ == "__main__":
    main()
