"""Grace in the real ecosystem: prose through her Imperator, handoffs to other MADs, no-LLM replies."""

from __future__ import annotations

import json

from tests.support.ecosystem import Running
from tests.support.llm_server import Reply, ScriptedLLM, ToolCall

RECEIVE_TIMEOUT = 60.0  # generous: only a failing test waits this long; CI machines are loaded


async def test_handoff_to_rogers_is_streamed_and_listed_as_participant(
    ecosystem: Running, llm_server: ScriptedLLM
) -> None:
    llm_server.script(
        ToolCall(name="handoff", arguments={"mad": "rogers", "request": "How many conversations are stored?"}),
        Reply(text="There is one conversation."),
        Reply(text="Rogers says there is one conversation."),
    )
    cid = await ecosystem.new_conversation()
    async with ecosystem.socket(cid) as ws:
        await ws.receive_json(timeout=RECEIVE_TIMEOUT)
        await ws.send_json({"type": "message", "text": "how many conversations do we have?"})
        frames = []
        grace_done = {"type": "delta", "mad": "grace", "event": "done"}
        while not (any(f["type"] == "reply" for f in frames) and any(grace_done.items() <= f.items() for f in frames)):
            frames.append(await ws.receive_json(timeout=RECEIVE_TIMEOUT))
            if frames[-1]["type"] == "error":
                raise AssertionError(frames[-1])
    [reply] = [f for f in frames if f["type"] == "reply"]
    assert reply["reply"]["text"] == "Rogers says there is one conversation."
    assert reply["participants"] == ["grace", "fiedler", "rogers"]
    handoffs = [f for f in frames if f.get("event") == "handoff"]
    assert [(h["mad"], h["detail"]["from"]) for h in handoffs] == [("rogers", "grace")]

    first, rogers_turn, last = await llm_server.wait_for_requests(3)
    assert {t["function"]["name"] for t in first.tools} >= {"handoff", "list_mads"}
    assert rogers_turn.messages[0]["content"].startswith("You are rogers")
    assert rogers_turn.last_user_text == "How many conversations are stored?"
    tool_result = json.loads(last.messages[-1]["content"])
    assert tool_result["result"]["mad"] == "rogers"
    assert tool_result["result"]["answer"] == "There is one conversation."

    stored = await ecosystem.history(cid, limit=200)
    assert any(m["sender"] == "grace" and m["recipient"] == "rogers" and m["kind"] == "request" for m in stored)


async def test_handoff_to_a_mad_that_is_not_running_goes_back_to_the_llm(
    ecosystem: Running, llm_server: ScriptedLLM
) -> None:
    llm_server.script(
        ToolCall(name="handoff", arguments={"mad": "marco", "request": "fetch example.org"}),
        ToolCall(name="handoff", arguments={"mad": "grace", "request": "loop"}),
        Reply(text="Nobody can fetch pages right now."),
    )
    cid = await ecosystem.new_conversation()
    body = await ecosystem.say(cid, "fetch example.org for me")
    assert body["reply"]["text"] == "Nobody can fetch pages right now."
    assert body["participants"] == ["grace", "fiedler"]
    _, second, third = await llm_server.wait_for_requests(3)
    unavailable = json.loads(second.messages[-1]["content"])["error"]
    assert unavailable["code"] == "mad_unavailable"
    assert "fiedler, grace, rogers" in unavailable["message"]
    assert json.loads(third.messages[-1]["content"])["error"]["code"] == "invalid_handoff"


async def test_list_mads_tool_reports_the_directory(ecosystem: Running) -> None:
    cid = await ecosystem.new_conversation()
    body = await ecosystem.say(cid, "/grace list_mads")
    [listing] = body["reply"]["data"]
    names = [m["name"] for m in listing["mads"]]
    assert names == ["fiedler", "grace", "rogers"]
    grace = listing["mads"][1]
    assert set(grace["tools"]) >= {"handoff", "list_mads"} and grace["accepts_prose"] is True


async def test_without_an_llm_prose_gets_a_normal_reply_saying_how_to_configure_one(
    ecosystem_without_llm: Running,
) -> None:
    eco = ecosystem_without_llm
    cid = await eco.new_conversation()
    body = await eco.say(cid, "hello?")
    assert body["reply"]["error"] is None
    assert "No LLM is configured" in body["reply"]["text"]
    assert "MAD_LLM_API_BASE" in body["reply"]["text"]
    commands = await eco.say(cid, "/rogers list_conversations")
    assert commands["reply"]["data"][0]["conversations"][0]["id"] == cid
