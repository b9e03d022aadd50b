"""The Imperator remembers the conversation: earlier turns come from Rogers."""

from __future__ import annotations

from tests.support.ecosystem import Running
from tests.support.llm_server import Reply, ScriptedLLM


async def test_second_turn_sees_the_first(ecosystem: Running, llm_server: ScriptedLLM) -> None:
    llm_server.script(Reply(text="Nice to meet you, Ada."), Reply(text="Your name is Ada."))
    cid = await ecosystem.new_conversation()
    first = await ecosystem.say(cid, "My name is Ada.")
    assert first["reply"]["text"] == "Nice to meet you, Ada."
    second = await ecosystem.say(cid, "What is my name?")
    assert second["reply"]["text"] == "Your name is Ada."

    _, recalled = await llm_server.wait_for_requests(2)
    turns = [(m["role"], m["content"]) for m in recalled.messages if m["role"] != "system"]
    assert turns == [
        ("user", "My name is Ada."),
        ("assistant", "Nice to meet you, Ada."),
        ("user", "What is my name?"),
    ]


async def test_other_conversations_are_not_recalled(ecosystem: Running, llm_server: ScriptedLLM) -> None:
    llm_server.script(Reply(text="Noted."), Reply(text="I do not know."))
    first = await ecosystem.new_conversation()
    await ecosystem.say(first, "The launch code is in the blue folder.")
    second = await ecosystem.new_conversation()
    await ecosystem.say(second, "Where is the launch code?")
    _, fresh = await llm_server.wait_for_requests(2)
    assert [m["content"] for m in fresh.messages if m["role"] != "system"] == ["Where is the launch code?"]
