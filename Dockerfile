# syntax=docker/dockerfile:1
# Build stage: resolve and install dependencies from the lockfile with uv.
FROM python:3.11-slim-bookworm AS build
COPY --from=ghcr.io/astral-sh/uv:0.13.9 /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never
WORKDIR /app
# Dependencies first, so code edits don't invalidate this layer.
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --locked --no-dev --no-install-project
COPY bot ./bot
COPY cogs ./cogs
COPY services ./services
RUN uv sync --locked --no-dev --no-editable

# Runtime stage: the virtualenv and the code only, run as an unprivileged user.
FROM python:3.11-slim-bookworm
RUN useradd --create-home --uid 10001 --user-group courier
WORKDIR /app
COPY --from=build --chown=courier:courier /app/.venv /app/.venv
ENV PATH="/app/.venv/bin:$PATH" \
    PYTHONUNBUFFERED=1 \
    COURIER_HEALTH_FILE=/tmp/courier-health
USER 10001
# The bot closes Discord and drains the HTTP client on SIGTERM, then exits 0.
STOPSIGNAL SIGTERM
# With METRICS_PORT set (and METRICS_HOST=0.0.0.0 for Prometheus) it asks GET /healthz; otherwise it
# reads the health file the bot touches while connected.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-m", "bot.health"]
CMD ["python", "-m", "bot"]
