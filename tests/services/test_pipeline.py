"""The call pipeline's own behaviour: what it logs when a request fails."""

from __future__ import annotations

import asyncio

import pytest
from loguru import logger

from services.config import HTTPSettings
from services.errors import ConnectionFailedError
from services.http_client import http_client


async def test_pipeline_failure_log_says_what_the_server_did_wrong():
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    http_client.configure(HTTPSettings(retries=0, cache=False))
    lines: list[str] = []
    sink = logger.add(lines.append, level="WARNING", format="{message}")
    try:
        with pytest.raises(ConnectionFailedError) as caught:
            await http_client.get(f"{url}/dup?token=secret")
    finally:
        logger.remove(sink)
        server.close()
    assert "Content-Length twice" not in str(caught.value)  # the user-facing error stays short
    failure = next(line for line in lines if "failed after" in line)
    assert "Content-Length twice" in failure
    assert "secret" not in failure
