"""The stream socket is authenticated (cookie or bearer) and origin-checked before the upgrade."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from tests.gateway.conftest import GATEWAY_MADS
from tests.support.ecosystem import Running, ecosystem_settings, running
from tests.support.llm_server import ScriptedLLM

TIMEOUT = 15.0


async def handshake_status(http: aiohttp.ClientSession, url: str, **kwargs: object) -> int:
    with pytest.raises(aiohttp.WSServerHandshakeError) as failed:
        async with http.ws_connect(url, **kwargs):  # type: ignore[arg-type]
            pass
    return failed.value.status


async def test_wrong_origin_is_refused_before_the_upgrade(ecosystem: Running) -> None:
    cid = await ecosystem.new_conversation()
    url = ecosystem.at(f"/api/conversations/{cid}/stream")
    assert await handshake_status(ecosystem.http, url, origin="http://evil.example") == 403
    assert await handshake_status(ecosystem.http, url, origin=ecosystem.origin.replace("127.0.0.1", "localhost")) == 403
    async with ecosystem.socket(cid) as ws:
        assert (await ws.receive_json(timeout=TIMEOUT))["type"] == "ready"


async def test_browser_session_socket_needs_its_origin(ecosystem: Running) -> None:
    cid = await ecosystem.new_conversation()
    url = ecosystem.at(f"/api/conversations/{cid}/stream")
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
        assert await handshake_status(browser, url, origin=ecosystem.origin) == 401, "no session yet"
        async with browser.post(ecosystem.at("/api/session"), json={"token": ecosystem.token}) as response:
            assert response.status == 200
        assert await handshake_status(browser, url) == 403, "cookie without Origin"
        assert await handshake_status(browser, url, origin="https://attacker.example") == 403
        async with browser.ws_connect(url, origin=ecosystem.origin) as ws:
            assert (await ws.receive_json(timeout=TIMEOUT))["type"] == "ready"
            await ws.send_json({"type": "message", "text": "/grace list_mads", "client_id": "c1"})
            while (frame := await ws.receive_json(timeout=TIMEOUT))["type"] != "reply":
                assert frame["type"] != "error", frame
            assert frame["client_id"] == "c1"


async def test_bearer_clients_without_origin_may_connect(ecosystem: Running) -> None:
    cid = await ecosystem.new_conversation()
    async with ecosystem.http.ws_connect(ecosystem.at(f"/api/conversations/{cid}/stream")) as ws:
        assert (await ws.receive_json(timeout=TIMEOUT))["type"] == "ready"


async def test_trusted_origins_are_configurable(tmp_path: Path, llm_server: ScriptedLLM) -> None:
    settings = ecosystem_settings(
        tmp_path, llm_server.base_url, mads=GATEWAY_MADS, gateway={"trusted_origins": ["https://chat.example.org"]}
    )
    async with running(settings) as eco:
        cid = await eco.new_conversation()
        async with eco.socket(cid, origin="https://chat.example.org") as ws:
            assert (await ws.receive_json(timeout=TIMEOUT))["type"] == "ready"
        url = eco.at(f"/api/conversations/{cid}/stream")
        assert await handshake_status(eco.http, url, origin="https://other.example.org") == 403


async def test_origin_is_checked_against_the_gateways_own_origin_not_the_host_header(ecosystem: Running) -> None:
    cid = await ecosystem.new_conversation()
    url = ecosystem.at(f"/api/conversations/{cid}/stream")
    forged = {"Host": "evil.example"}
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
        async with browser.post(ecosystem.at("/api/session"), json={"token": ecosystem.token}) as response:
            assert response.status == 200
        assert await handshake_status(browser, url, origin="http://evil.example", headers=forged) == 403
        async with browser.ws_connect(url, origin=ecosystem.origin) as ws:
            assert (await ws.receive_json(timeout=TIMEOUT))["type"] == "ready"
    assert await handshake_status(ecosystem.http, url, origin="http://evil.example", headers=forged) == 403
