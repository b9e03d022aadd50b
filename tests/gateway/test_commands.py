"""Slash commands typed into the chat go through Grace straight to a MAD's tool (no LLM)."""

from __future__ import annotations

from tests.support.ecosystem import Running
from tests.support.llm_server import ScriptedLLM


async def test_rogers_list_conversations_runs_without_the_llm(ecosystem: Running, llm_server: ScriptedLLM) -> None:
    cid = await ecosystem.new_conversation("Quarterly budget")
    body = await ecosystem.say(cid, "/rogers list_conversations")
    assert body["participants"] == ["grace", "rogers"]
    assert body["reply"]["error"] is None
    [page] = body["reply"]["data"]
    assert [c["title"] for c in page["conversations"]] == ["Quarterly budget"]
    assert body["reply"]["text"].startswith("/rogers list_conversations:\n")
    assert "Quarterly budget" in body["reply"]["text"]
    assert llm_server.received == []


async def test_command_with_json_arguments(ecosystem: Running) -> None:
    cid = await ecosystem.new_conversation()
    await ecosystem.say(cid, "/grace list_mads")
    body = await ecosystem.say(cid, f'/rogers search {{"query": "list_mads", "conversation_id": "{cid}"}}')
    [result] = body["reply"]["data"]
    assert result["hits"], body
    assert {h["conversation_id"] for h in result["hits"]} == {cid}


async def test_help_lists_running_mads_and_their_tools(ecosystem: Running) -> None:
    cid = await ecosystem.new_conversation()
    body = await ecosystem.say(cid, "/help")
    text = body["reply"]["text"]
    assert "Syntax: /<mad> <tool>" in text
    for mad in ("fiedler", "grace", "rogers"):
        assert f"{mad} — " in text
    [listing] = body["reply"]["data"]
    rogers = next(m for m in listing["mads"] if m["name"] == "rogers")
    assert "history" in rogers["tools"]
    detail = await ecosystem.say(cid, "/help rogers")
    assert '/rogers history {"conversation_id": string' in detail["reply"]["text"]


async def test_syntax_errors_explain_the_syntax(ecosystem: Running) -> None:
    cid = await ecosystem.new_conversation()
    cases = {
        "/rogers": "tool",
        '/rogers search {"query": ': "arguments",
        "/rogers search [1, 2]": "arguments",
        "/Rogers! search": "mad",
        "/": "mad",
    }
    for text, field in cases.items():
        body = await ecosystem.say(cid, text)
        error = body["reply"]["error"]
        assert error is not None and error["code"] == "command_syntax", (text, body)
        assert [f["field"] for f in error["fields"]] == [field], text
        assert "Syntax: /<mad> <tool> [<json-object>]" in body["reply"]["text"], text
        assert body["participants"] == ["grace"]


async def test_tool_errors_come_back_named(ecosystem: Running) -> None:
    cid = await ecosystem.new_conversation()
    unknown = await ecosystem.say(cid, "/rogers fly")
    assert unknown["reply"]["error"]["code"] == "unknown_tool"
    assert "Try /help rogers" in unknown["reply"]["text"]
    invalid = await ecosystem.say(cid, '/rogers history {"limit": 0}')
    error = invalid["reply"]["error"]
    assert error["code"] == "invalid_arguments"
    assert {f["field"] for f in error["fields"]} == {
        "content.0.arguments.conversation_id",
        "content.0.arguments.limit",
    }
    assert "content.0.arguments.limit" in invalid["reply"]["text"]
    missing = await ecosystem.say(cid, "/marco fetch_url")
    assert missing["reply"]["error"]["code"] == "no_route"
    assert "Try /help" in missing["reply"]["text"]


async def test_a_command_to_a_mad_that_is_not_running_makes_it_no_participant(ecosystem: Running) -> None:
    cid = await ecosystem.new_conversation()
    body = await ecosystem.say(cid, "/nosuchmad foo")
    assert body["reply"]["error"]["code"] == "no_route"
    assert "nosuchmad" in body["reply"]["text"] and "Try /help" in body["reply"]["text"]
    assert body["participants"] == ["grace"]
    status, conversation = await ecosystem.get(f"/api/conversations/{cid}")
    assert status == 200
    assert {p["address"] for p in conversation["participants"]} == {"user.tester", "grace"}


async def test_the_conversation_list_carries_participants_like_one_conversation(ecosystem: Running) -> None:
    cid = await ecosystem.new_conversation()
    await ecosystem.say(cid, "/rogers stats")
    status, page = await ecosystem.get("/api/conversations")
    assert status == 200
    [listed] = page["conversations"]
    status, single = await ecosystem.get(f"/api/conversations/{cid}")
    assert status == 200
    assert listed["participants"] == single["participants"]
    people = {p["address"]: p["message_count"] for p in listed["participants"] if p["address"].startswith("user.")}
    assert people == {"user.tester": 2}  # the person's message and the reply: what the chat shows
    assert listed["message_count"] > 2  # Grace's request to Rogers and the tool-call events are stored too
