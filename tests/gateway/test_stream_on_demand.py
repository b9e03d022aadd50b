"""The LLM's answer is streamed exactly when someone watches the conversation (a socket is open on it)."""

from __future__ import annotations

from tests.gateway.test_stream import RECEIVE_TIMEOUT, frames_until_all
from tests.support.ecosystem import Running
from tests.support.llm_server import Reply, ScriptedLLM


async def test_an_unwatched_conversation_gets_a_whole_answer_and_a_watched_one_a_stream(
    ecosystem: Running, llm_server: ScriptedLLM
) -> None:
    llm_server.script(Reply(text="Nobody was watching."), Reply(text="Now someone is."))
    cid = await ecosystem.new_conversation()

    body = await ecosystem.say(cid, "anyone there?")
    assert body["reply"]["text"] == "Nobody was watching."
    assert llm_server.last_request.stream is False

    async with ecosystem.socket(cid) as ws:
        assert (await ws.receive_json(timeout=RECEIVE_TIMEOUT))["type"] == "ready"
        await ws.send_json({"type": "message", "text": "and now?", "client_id": "c2"})
        frames = await frames_until_all(ws, "reply", "done")
    assert llm_server.last_request.stream is True
    deltas = "".join(f.get("text") or "" for f in frames if f["type"] == "delta")
    assert deltas == "Now someone is."
    assert next(f for f in frames if f["type"] == "reply")["reply"]["text"] == "Now someone is."
