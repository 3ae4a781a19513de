#!/usr/bin/env bash
# Instructions per request of benchmarks/no_io.py, counted by valgrind's callgrind: repeatable to a few
# hundred instructions whatever else the machine runs, where CPU seconds drift by up to 2x on a shared one.
#
# Usage: bash benchmarks/instructions.sh [VARIANT] [CONCURRENCY]   (defaults: courier 10; ~1 min)
# VARIANT is one of no_io.py's: courier, courier-no-cache, transport, aiohttp, with @large or
# @revalidate for the 100 KiB and 304 paths (courier@revalidate). Needs valgrind (apt-get install valgrind).
# Two runs of 1,000 and 4,000 requests after the same warm-up; the difference over 3,000 is per request.
set -euo pipefail
cd "$(dirname "$0")/.."
variant="${1:-courier}"
concurrency="${2:-10}"
count() {
  PYTHONHASHSEED=0 uv run --no-sync valgrind --tool=callgrind --callgrind-out-file=/dev/null \
    python benchmarks/no_io.py --variants "$variant" --rounds 1 --requests "$1" \
    --concurrency "$concurrency" 2>&1 >/dev/null | grep -o 'Collected : [0-9]*' | awk '{print $3}' | tail -n 1
}
few="$(count 1000)"
many="$(count 4000)"
echo "$variant c=$concurrency: $(( (many - few) / 3000 )) instructions per request"
