"""Container health check: exit 0 when the bot is connected, 1 otherwise.

With METRICS_PORT set it asks the bot's /healthz; without, it reads the health file the bot touches.
"""

from __future__ import annotations

import http.client
import json
import os
import sys
import time
from pathlib import Path

from bot.config import load_env_file
from services.config import env_optional_str, env_str

# The bot rewrites the file this often while connected (bot.bot imports it from here).
HEALTH_INTERVAL = 20.0
STALE_AFTER = HEALTH_INTERVAL * 3


def check(path: Path, now: float | None = None) -> tuple[bool, str]:
    """Whether `path` says the bot is connected, and why."""
    try:
        age = (time.time() if now is None else now) - path.stat().st_mtime
    except FileNotFoundError:
        return False, "not connected to Discord (no health file)"
    except OSError as exc:
        return False, f"cannot read the health file: {exc.strerror}"
    if age > STALE_AFTER:
        return False, f"no sign of life for {age:.0f}s"
    return True, f"connected ({age:.0f}s ago)"


def probe(host: str, port: int, timeout: float = 3.0) -> tuple[bool, str]:
    """Ask the bot's /healthz on its own machine: healthy on 200; the reason comes from the body."""
    target = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)  # noqa: S104
    connection = http.client.HTTPConnection(target, port, timeout=timeout)
    try:
        connection.request("GET", "/healthz")
        response = connection.getresponse()
        body = response.read(4096)
    except OSError as exc:
        return False, f"no answer from http://{target}:{port}/healthz: {exc}"
    finally:
        connection.close()
    try:
        reason = str(json.loads(body)["reason"])
    except (ValueError, KeyError, TypeError):
        reason = f"HTTP {response.status}"
    return response.status == 200, reason


def main() -> int:
    """Probe METRICS_HOST:METRICS_PORT/healthz when METRICS_PORT is set, else the COURIER_HEALTH_FILE.

    Both come from the environment or .env, read as the bot reads them.
    """
    load_env_file()
    port = env_optional_str(os.environ, "METRICS_PORT") or ""
    if port.isdecimal():
        healthy, reason = probe(env_str(os.environ, "METRICS_HOST", "127.0.0.1"), int(port))
        print(reason, file=sys.stdout if healthy else sys.stderr)
        return 0 if healthy else 1
    name = env_optional_str(os.environ, "COURIER_HEALTH_FILE")
    if name is None:
        print("COURIER_HEALTH_FILE is not set", file=sys.stderr)
        return 1
    healthy, reason = check(Path(name))
    print(reason, file=sys.stdout if healthy else sys.stderr)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
