"""A socket lives no longer than its credentials: revoking the token or ending the session closes it."""

from __future__ import annotations

from typing import Any

import aiohttp
from aiohttp import WSMsgType

from tests.gateway.test_tokens_cli import tokens
from tests.support.ecosystem import Running

TIMEOUT = 60.0
"""Only a failing test waits this long; the gateway checks open sockets twice a second."""


async def closed_with_an_error(ws: aiohttp.ClientWebSocketResponse) -> tuple[int | None, dict[str, Any]]:
    """Read until the server closes the socket: its close code, and the last error frame it sent before."""
    last_error: dict[str, Any] = {}
    while True:
        message = await ws.receive(timeout=TIMEOUT)
        if message.type is WSMsgType.TEXT:
            frame = message.json()
            if frame["type"] == "error":
                last_error = frame
        elif message.type is WSMsgType.CLOSE:
            return message.data, last_error
        elif message.type in (WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
            return None, last_error


async def test_revoking_the_token_with_the_cli_closes_its_open_socket(ecosystem: Running) -> None:
    async with ecosystem.signed_in_as("mallory") as mallory:
        cid = await mallory.new_conversation()
        async with mallory.socket(cid) as ws:
            assert (await ws.receive_json(timeout=TIMEOUT))["type"] == "ready"
            code, _, err = await tokens(ecosystem.ecosystem.settings.ecosystem.data_dir, "revoke", "mallory")
            assert code == 0, err
            code, error = await closed_with_an_error(ws)
            assert code == aiohttp.WSCloseCode.POLICY_VIOLATION
            assert error["status"] == 401 and error["error"]["code"] == "unauthorized"


async def test_a_message_after_revocation_is_refused(ecosystem: Running) -> None:
    async with ecosystem.signed_in_as("trudy") as trudy:
        cid = await trudy.new_conversation()
        async with trudy.socket(cid) as ws:
            assert (await ws.receive_json(timeout=TIMEOUT))["type"] == "ready"
            await ecosystem.gateway.auth.store.revoke("trudy")
            await ws.send_json({"type": "message", "text": "/grace list_mads", "client_id": "late"})
            code, error = await closed_with_an_error(ws)
            assert code == aiohttp.WSCloseCode.POLICY_VIOLATION and error["status"] == 401, error
        assert await ecosystem.history(cid) == [], "the late message was not posted"


async def test_signing_out_closes_the_sessions_sockets(ecosystem: Running) -> None:
    cid = await ecosystem.new_conversation()
    url = ecosystem.at(f"/api/conversations/{cid}/stream")
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
        async with browser.post(ecosystem.at("/api/session"), json={"token": ecosystem.token}) as response:
            csrf = (await response.json())["csrf_token"]
        async with browser.ws_connect(url, origin=ecosystem.origin) as ws:
            assert (await ws.receive_json(timeout=TIMEOUT))["type"] == "ready"
            async with browser.post(ecosystem.at("/api/session/logout"), headers={"X-CSRF-Token": csrf}) as response:
                assert response.status == 204
            code, error = await closed_with_an_error(ws)
            assert code == aiohttp.WSCloseCode.POLICY_VIOLATION and error["status"] == 401, error
