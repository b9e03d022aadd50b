"""Hostile JSON (deep nesting, huge integers, duplicate keys): a named 400 over HTTP, an error frame on a socket."""

from __future__ import annotations

import logging

import aiohttp
import pytest

from tests.gateway.conftest import assert_error
from tests.support.ecosystem import Running

RECEIVE_TIMEOUT = 60.0
DEEP = "[" * 100_000 + "]" * 100_000
HUGE_INT = '{"token": ' + "9" * 5_000 + "}"
NESTED_IN_OBJECT = '{"text": ' + "[" * 100_000 + "]" * 100_000 + "}"


def tracebacks(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.exc_info is not None or r.levelno >= logging.ERROR]


@pytest.mark.parametrize("raw", [DEEP, HUGE_INT, NESTED_IN_OBJECT], ids=["deep", "huge-int", "deep-in-object"])
async def test_hostile_json_on_the_public_login_is_400_without_traceback(
    ecosystem: Running, raw: str, caplog: pytest.LogCaptureFixture
) -> None:
    headers = {"Content-Type": "application/json"}
    async with (
        aiohttp.ClientSession() as anonymous,
        anonymous.post(ecosystem.at("/api/session"), data=raw, headers=headers) as response,
    ):
        assert response.status == 400, await response.text()
        error = assert_error(await response.json(), "malformed_json", "body")
    assert "invalid JSON" in error["message"]
    assert not tracebacks(caplog), tracebacks(caplog)


async def test_hostile_json_on_an_authenticated_route_is_400(ecosystem: Running) -> None:
    cid = await ecosystem.new_conversation()
    headers = {"Content-Type": "application/json"}
    for raw, says in ((DEEP, "nested"), ('{"text": ' + "1" * 5000 + "}", "digits")):
        status, body = await ecosystem.post(f"/api/conversations/{cid}/messages", data=raw, headers=headers)
        assert status == 400, body
        assert says in assert_error(body, "malformed_json", "body")["message"]


async def test_duplicate_keys_are_refused(ecosystem: Running) -> None:
    cid = await ecosystem.new_conversation()
    status, body = await ecosystem.post(
        f"/api/conversations/{cid}/messages",
        data='{"text": "harmless", "text": "/hopper run_python"}',
        headers={"Content-Type": "application/json"},
    )
    assert status == 400, body
    error = assert_error(body, "malformed_json", "body")
    assert 'duplicate key "text"' in error["message"]
    assert await ecosystem.history(cid) == [], "nothing was posted"
    status, body = await ecosystem.post(
        "/api/conversations", data='{"a": {"x": 1, "x": 2}}', headers={"Content-Type": "application/json"}
    )
    assert status == 400 and 'duplicate key "x"' in body["error"]["message"], body


async def test_hostile_frames_get_error_frames_and_the_socket_stays_usable(
    ecosystem: Running, caplog: pytest.LogCaptureFixture
) -> None:
    cid = await ecosystem.new_conversation()
    async with ecosystem.socket(cid) as ws:
        assert (await ws.receive_json(timeout=RECEIVE_TIMEOUT))["type"] == "ready"
        for raw in (DEEP, '{"type": "message", "text": "x", "client_id": ' + "7" * 5000 + "}", '{"a": 1, "a": 2}'):
            await ws.send_str(raw)
            frame = await ws.receive_json(timeout=RECEIVE_TIMEOUT)
            assert frame["type"] == "error" and frame["status"] == 400, frame
            assert_error({"error": frame["error"]}, "malformed_json", "frame")
        await ws.send_json({"type": "message", "text": "/grace list_mads", "client_id": "after"})
        while (frame := await ws.receive_json(timeout=RECEIVE_TIMEOUT))["type"] != "reply":
            assert frame["type"] != "error", frame
        assert frame["client_id"] == "after"
    assert not tracebacks(caplog), tracebacks(caplog)
