"""HTTP connections on real sockets: slow and idle clients are cut; aiohttp's own errors look like ours."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from gateway.security_headers import BASE_HEADERS
from tests.gateway.conftest import GATEWAY_MADS
from tests.support.ecosystem import Running, ecosystem_settings, running
from tests.support.llm_server import ScriptedLLM

GIVE_UP = 60.0
"""Only a failing test waits this long: the server is expected to cut the connection far sooner."""


async def connect(url: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    return await asyncio.open_connection(parts.hostname, parts.port)


async def raw_exchange(url: str, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send raw bytes, read the whole response (the server closes after an error)."""
    reader, writer = await connect(url)
    try:
        writer.write(request)
        await writer.drain()
        async with asyncio.timeout(GIVE_UP):
            raw = await reader.read()
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, body


async def closed_by_server(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sent before closing the connection."""
    async with asyncio.timeout(GIVE_UP):
        return await reader.read()


@pytest.fixture
async def impatient(tmp_path: Path, llm_server: ScriptedLLM) -> Running:  # type: ignore[misc]
    settings = ecosystem_settings(
        tmp_path / "data",
        llm_server.base_url,
        mads=GATEWAY_MADS,
        gateway={"header_timeout": 1, "idle_timeout": 2, "body_timeout": 1},
    )
    async with running(settings) as eco:
        yield eco


async def test_a_client_sending_headers_one_byte_at_a_time_is_cut(impatient: Running) -> None:
    reader, writer = await connect(impatient.url)
    request = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"X-Slow: " + b"a" * 2_000

    sent_all = False

    async def trickle() -> None:
        nonlocal sent_all
        for byte in request:  # 2 000 bytes at one per 50 ms: far longer than the header timeout
            try:
                writer.write(bytes([byte]))
                await writer.drain()
            except ConnectionError:
                return
            await asyncio.sleep(0.05)
        sent_all = True

    sender = asyncio.create_task(trickle())
    try:
        assert await closed_by_server(reader) == b"", "closed without an answer"
        assert not sent_all, "the server gave up before the client did"
    finally:
        sender.cancel()
        writer.close()


async def test_idle_connections_are_closed(impatient: Running) -> None:
    connections = [await connect(impatient.url) for _ in range(50)]
    try:
        for reader, _ in connections:
            assert await closed_by_server(reader) == b""
    finally:
        for _, writer in connections:
            writer.close()
    status, body = await impatient.get("/healthz")
    assert status == 200 and body["status"] == "ok", "prompt clients are served as before"


async def test_keep_alive_requests_on_one_connection_still_work(impatient: Running) -> None:
    reader, writer = await connect(impatient.url)
    try:
        for _ in range(3):
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            await writer.drain()
            async with asyncio.timeout(GIVE_UP):
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(
                    next(h for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")).split(b":")[1]
                )
                body = await reader.readexactly(length)
            assert head.startswith(b"HTTP/1.1 200") and json.loads(body)["status"] == "ok"
    finally:
        writer.close()


async def test_a_body_that_never_arrives_is_answered_408(impatient: Running) -> None:
    reader, writer = await connect(impatient.url)
    try:
        writer.write(
            b"POST /api/session HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b'Content-Length: 100\r\n\r\n{"token": '
        )
        await writer.drain()
        answer = await closed_by_server(reader)
    finally:
        writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408"), answer[:200]
    assert json.loads(body)["error"]["code"] == "request_timeout"


@pytest.mark.parametrize(
    ("request_bytes", "what"),
    [
        (b"GET /\x00 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", "NUL in the path"),
        (b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 9_000 + b"\r\n\r\n", "oversized header"),
        (b"GET /" + b"a" * 9_000 + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", "oversized request line"),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40 + b"\r\n\r\n", "TLS to the plain port"),
    ],
    ids=["nul", "big-header", "big-line", "tls"],
)
async def test_aiohttps_own_400s_carry_our_headers_and_body_and_log_one_line(
    ecosystem: Running, request_bytes: bytes, what: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    status, headers, body = await raw_exchange(ecosystem.url, request_bytes)
    assert status == 400, what
    for name, value in BASE_HEADERS.items():
        assert headers.get(name.lower()) == value, (what, name)
    assert headers["server"] == "mad-ecosystem", "no version banner"
    assert headers["cache-control"] == "no-store"
    assert headers["content-type"].startswith("application/json")
    error = json.loads(body)["error"]
    assert error["code"] == "bad_request" and error["message"] and error["retryable"] is False
    assert "\x00" not in error["message"] and "aaaa" not in error["message"], "the bad input is not echoed"
    assert not [r for r in caplog.records if r.exc_info], "a client error is not a traceback"
    assert len([r for r in caplog.records if "malformed HTTP request" in r.getMessage()]) == 1
