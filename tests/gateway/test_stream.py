"""The conversation WebSocket: deltas forwarded in order, messages posted over the socket, bad frames named."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
from aiohttp import web

from bus.envelope import DataPart, Envelope, Kind
from bus.topics import StreamDelta, stream_topic
from gateway.outbox import Outbox
from mads.core.redaction import SecretRedactor
from tests.gateway.conftest import assert_error
from tests.support.ecosystem import Running
from tests.support.llm_server import Reply, ScriptedLLM, ToolCall

RECEIVE_TIMEOUT = 60.0  # generous: only a failing test waits this long; CI machines are loaded


async def frames_until(ws: aiohttp.ClientWebSocketResponse, *kinds: str) -> list[dict[str, Any]]:
    """Every frame up to and including the first whose type (or delta event) is in ``kinds``."""
    got = []
    while True:
        frame = await ws.receive_json(timeout=RECEIVE_TIMEOUT)
        got.append(frame)
        if frame["type"] in kinds or frame.get("event") in kinds:
            return got


async def frames_until_all(ws: aiohttp.ClientWebSocketResponse, *kinds: str) -> list[dict[str, Any]]:
    """Every frame until each of ``kinds`` (frame type or delta event) has been seen.

    Deltas and the reply travel different paths (the bus stream vs. the request), so
    either may reach the socket first."""
    got: list[dict[str, Any]] = []
    missing = set(kinds)
    while missing:
        got.extend(await frames_until(ws, *missing))
        missing -= {got[-1]["type"], got[-1].get("event")}
    return got


async def test_streams_deltas_in_order_then_the_reply(ecosystem: Running, llm_server: ScriptedLLM) -> None:
    text = "The quick brown fox jumps over the lazy dog."
    llm_server.script(ToolCall(name="list_mads"), Reply(text=text))
    cid = await ecosystem.new_conversation()
    async with ecosystem.socket(cid) as ws:
        ready = await ws.receive_json(timeout=RECEIVE_TIMEOUT)
        assert ready == {"type": "ready", "conversation_id": cid}
        await ws.send_json({"type": "message", "text": "who is around?", "client_id": "c1"})
        frames = await frames_until_all(ws, "reply", "done")
    [reply] = [f for f in frames if f["type"] == "reply"]
    assert reply["type"] == "reply" and reply["client_id"] == "c1"
    assert reply["reply"]["text"] == text
    assert reply["participants"] == ["grace", "fiedler"]
    deltas = [f for f in frames if f["type"] == "delta"]
    events = [f["event"] for f in deltas]
    assert events[0] == "tool" and deltas[0]["detail"]["tool"] == "list_mads"
    assert events[-1] == "done"
    pieces = [f["text"] for f in deltas if f["event"] == "delta"]
    assert len(pieces) > 1
    assert "".join(pieces) == text
    status, _ = await ecosystem.get(f"/api/conversations/{cid}")
    assert status == 200
    stored = await ecosystem.history(cid)
    assert any(m["id"] == reply["message_id"] and m["text"] == "who is around?" for m in stored)


async def test_every_socket_on_a_conversation_gets_the_stream(ecosystem: Running) -> None:
    cid = await ecosystem.new_conversation()
    async with ecosystem.socket(cid) as first, ecosystem.socket(cid) as second:
        for ws in (first, second):
            assert (await ws.receive_json(timeout=RECEIVE_TIMEOUT))["type"] == "ready"
        await first.send_json({"type": "message", "text": "/rogers stats"})
        own = await frames_until_all(first, "reply", "done")
        seen = await frames_until(second, "done")
    [reply] = [f for f in own if f["type"] == "reply"]
    assert [f["event"] for f in own if f["type"] == "delta"] == ["tool", "delta", "done"]
    assert own[0]["mad"] == "rogers" and own[0]["detail"] == {"tool": "stats"}
    assert [f.get("event") for f in seen] == ["tool", "delta", "done"]
    assert seen[1]["text"] == reply["reply"]["text"]


async def test_bad_frames_get_error_frames_naming_the_field(ecosystem: Running) -> None:
    cid = await ecosystem.new_conversation()
    async with ecosystem.socket(cid) as ws:
        await ws.receive_json(timeout=RECEIVE_TIMEOUT)
        await ws.send_str("{not json")
        bad_json = await ws.receive_json(timeout=RECEIVE_TIMEOUT)
        await ws.send_json({"type": "message", "txt": "hi", "client_id": "k"})
        bad_field = await ws.receive_json(timeout=RECEIVE_TIMEOUT)
        await ws.send_json({"type": "shout", "text": "hi"})
        bad_type = await ws.receive_json(timeout=RECEIVE_TIMEOUT)
        await ws.send_bytes(b"\x00\x01")
        binary = await ws.receive_json(timeout=RECEIVE_TIMEOUT)
    assert bad_json["type"] == "error" and bad_json["status"] == 400
    assert_error({"error": bad_json["error"]}, "malformed_json", "frame")
    assert bad_field["status"] == 422 and bad_field["client_id"] == "k"
    assert_error({"error": bad_field["error"]}, "invalid_frame", "frame.text", "frame.txt")
    assert_error({"error": bad_type["error"]}, "invalid_frame", "frame.type")
    assert binary["status"] == 415 and binary["error"]["code"] == "unsupported_frame"


async def test_socket_for_unknown_conversation_is_refused_with_404(ecosystem: Running) -> None:
    try:
        async with ecosystem.socket("no-such-conversation"):
            raise AssertionError("the socket should have been refused")
    except aiohttp.WSServerHandshakeError as exc:
        assert exc.status == 404


async def test_plain_get_on_the_stream_asks_for_a_websocket(ecosystem: Running) -> None:
    cid = await ecosystem.new_conversation()
    status, body = await ecosystem.get(f"/api/conversations/{cid}/stream")
    assert status == 426
    assert_error(body, "websocket_required")


async def test_deltas_published_on_the_bus_reach_the_socket(ecosystem: Running) -> None:
    cid = await ecosystem.new_conversation()
    async with ecosystem.socket(cid) as ws:
        await ws.receive_json(timeout=RECEIVE_TIMEOUT)
        for n in range(50):
            delta = StreamDelta(mad="marco", text=f"{n} ")
            await ecosystem.host.bus.publish(
                Envelope(
                    sender="marco",
                    recipient=stream_topic(cid),
                    kind=Kind.EVENT,
                    conversation_id=cid,
                    content=[DataPart(value=delta.model_dump(mode="json"))],
                )
            )
        frames = [await ws.receive_json(timeout=RECEIVE_TIMEOUT) for _ in range(50)]
    assert [f["text"] for f in frames] == [f"{n} " for n in range(50)]
    assert {f["mad"] for f in frames} == {"marco"}


async def test_a_slow_socket_drops_deltas_with_a_notice_but_keeps_replies() -> None:
    """The outbox never waits on the client: over its bound, deltas are counted and dropped."""
    outbox = Outbox(SecretRedactor(), max_deltas=10)
    for n in range(25):
        outbox.put({"type": "delta", "text": str(n)}, droppable=True)
    outbox.put({"type": "reply", "text": "final"})
    assert outbox.dropped == 15

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        pump = asyncio.create_task(outbox.pump(ws))
        await outbox.flushed(5.0)
        pump.cancel()
        await ws.close()
        return ws

    app = web.Application()
    app.router.add_get("/", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    try:
        async with aiohttp.ClientSession() as http, http.ws_connect(f"http://127.0.0.1:{port}/") as ws:
            frames = [msg.json() async for msg in ws]
    finally:
        await runner.cleanup()
    assert frames[0]["type"] == "notice" and frames[0]["dropped"] == 15
    assert [f["text"] for f in frames[1:11]] == [str(n) for n in range(10)]
    assert frames[-1] == {"type": "reply", "text": "final"}
