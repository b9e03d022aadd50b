"""Idempotency-Key on the JSON API and the socket: a retry never stores (or answers) a message twice."""

from __future__ import annotations

from tests.gateway.test_stream import RECEIVE_TIMEOUT, frames_until
from tests.support.ecosystem import Running
from tests.support.llm_server import ScriptedLLM, echo_last_user


async def _post(eco: Running, cid: str, text: str, key: str) -> tuple[int, dict]:
    return await eco.post(f"/api/conversations/{cid}/messages", {"text": text}, headers={"Idempotency-Key": key})


async def _user_texts(eco: Running, cid: str) -> list[str]:
    return [m["text"] for m in await eco.history(cid, limit=200) if m["sender"].startswith("user.")]


async def test_a_retried_post_returns_the_stored_reply_and_stores_once(
    ecosystem: Running, llm_server: ScriptedLLM
) -> None:
    llm_server.respond_with(echo_last_user)
    cid = await ecosystem.new_conversation()
    status, first = await _post(ecosystem, cid, "only once please", "retry-1")
    assert status == 200, first
    asked = len(llm_server.received)

    status, again = await _post(ecosystem, cid, "only once please", "retry-1")
    assert status == 200, again
    assert again["message_id"] == first["message_id"] and again["reply"]["text"] == first["reply"]["text"]
    assert len(llm_server.received) == asked, "the retry did not ask the LLM again"
    assert await _user_texts(ecosystem, cid) == ["only once please"]

    status, other = await _post(ecosystem, cid, "only once please", "retry-2")
    assert status == 200 and other["message_id"] != first["message_id"], "another key is another message"

    other_cid = await ecosystem.new_conversation()
    status, body = await _post(ecosystem, other_cid, "elsewhere", "retry-1")
    assert (status, body["error"]["code"]) == (409, "idempotency_conflict"), body


async def test_keys_belong_to_one_person(ecosystem: Running, llm_server: ScriptedLLM) -> None:
    llm_server.respond_with(echo_last_user)
    async with ecosystem.signed_in_as("bob") as bob:
        cid = await bob.new_conversation()
        status, mine = await _post(bob, cid, "bob speaking", "shared-key")
        assert status == 200, mine
    cid = await ecosystem.new_conversation()
    status, theirs = await _post(ecosystem, cid, "tester speaking", "shared-key")
    assert status == 200 and theirs["message_id"] != mine["message_id"]


async def test_a_malformed_key_is_named(ecosystem: Running) -> None:
    cid = await ecosystem.new_conversation()
    status, body = await _post(ecosystem, cid, "hello", "spaces are not allowed")
    assert status == 422
    assert body["error"]["fields"][0]["field"] == "header.Idempotency-Key"
    assert await _user_texts(ecosystem, cid) == []


async def test_a_retried_socket_message_is_answered_from_the_store(ecosystem: Running, llm_server: ScriptedLLM) -> None:
    llm_server.respond_with(echo_last_user)
    cid = await ecosystem.new_conversation()
    async with ecosystem.socket(cid) as ws:
        assert (await ws.receive_json(timeout=RECEIVE_TIMEOUT))["type"] == "ready"
        frame = {"type": "message", "text": "over the socket", "client_id": "a", "idempotency_key": "ws-1"}
        await ws.send_json(frame)
        first = (await frames_until(ws, "reply", "error"))[-1]
        assert first["type"] == "reply", first
        asked = len(llm_server.received)
        await ws.send_json({**frame, "client_id": "b"})
        again = (await frames_until(ws, "reply", "error"))[-1]
        assert again["type"] == "reply" and again["client_id"] == "b"
        assert again["message_id"] == first["message_id"]
        assert len(llm_server.received) == asked
    assert await _user_texts(ecosystem, cid) == ["over the socket"]
