"""Container health check: exit 0 when the bot touched its health file recently, 1 otherwise."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

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


def main() -> int:
    """Check the file named by COURIER_HEALTH_FILE."""
    name = os.environ.get("COURIER_HEALTH_FILE", "").strip()
    if not name:
        print("COURIER_HEALTH_FILE is not set", file=sys.stderr)
        return 1
    healthy, reason = check(Path(name))
    print(reason, file=sys.stdout if healthy else sys.stderr)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
