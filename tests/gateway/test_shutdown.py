"""Graceful stop: in-flight requests finish (or get 503 after the drain timeout), sockets close going-away."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest
from aiohttp import WSCloseCode, WSMsgType

from tests.gateway.conftest import assert_error
from tests.support.ecosystem import ecosystem_settings, running
from tests.support.llm_server import Hang, Reply, ScriptedLLM


async def test_stop_lets_in_flight_requests_finish_and_closes_sockets_going_away(
    tmp_path: Path, llm_server: ScriptedLLM
) -> None:
    llm_server.script(Reply(text="finished after all", delay=0.5))
    async with running(ecosystem_settings(tmp_path, llm_server.base_url)) as eco:
        cid = await eco.new_conversation()
        async with eco.socket(cid) as ws:
            assert (await ws.receive_json(timeout=10))["type"] == "ready"
            posted = asyncio.create_task(eco.post(f"/api/conversations/{cid}/messages", {"text": "take your time"}))
            await llm_server.wait_for_requests(1)
            await eco.ecosystem.stop()
            status, body = await posted
            assert status == 200, body
            assert body["reply"]["text"] == "finished after all"
            while (message := await ws.receive(timeout=10)).type not in (WSMsgType.CLOSE, WSMsgType.CLOSED):
                assert message.type is WSMsgType.TEXT
            assert message.type is WSMsgType.CLOSE
            assert message.data == WSCloseCode.GOING_AWAY
        with pytest.raises(aiohttp.ClientConnectionError):
            await eco.get("/healthz")


async def test_requests_still_waiting_after_the_drain_timeout_get_503(tmp_path: Path, llm_server: ScriptedLLM) -> None:
    llm_server.script(Hang())
    settings = ecosystem_settings(tmp_path, llm_server.base_url, ecosystem={"drain_timeout": 0.5})
    async with running(settings) as eco:
        cid = await eco.new_conversation()
        posted = asyncio.create_task(eco.post(f"/api/conversations/{cid}/messages", {"text": "never answered"}))
        await llm_server.wait_for_requests(1)
        await eco.ecosystem.stop()
        status, body = await posted
    assert status == 503
    assert_error(body, "shutting_down")


async def test_reply_timeout_is_504(tmp_path: Path, llm_server: ScriptedLLM) -> None:
    llm_server.script(Hang())
    settings = ecosystem_settings(
        tmp_path, llm_server.base_url, gateway={"reply_timeout": 0.5}, ecosystem={"drain_timeout": 0.5}
    )
    async with running(settings) as eco:
        cid = await eco.new_conversation()
        status, body = await eco.post(f"/api/conversations/{cid}/messages", {"text": "are you there?"})
    assert status == 504
    error = assert_error(body, "upstream_timeout")
    assert "grace did not answer within 0.5s" in error["message"]
