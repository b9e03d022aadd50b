"""The Imperator: a validated tool-calling loop through the real Fiedler and the scripted LLM server over HTTP."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bus.envelope import DELTA_MEDIA_TYPE, Kind
from bus.topics import LLM_CALL, VALIDATION_FAILURE, stream_topic
from mads.fiedler.schemas import FiedlerConfig
from tests.mads.fiedler.harness import KEY_ENV, SECRET_KEY, config, ecosystem, span_exporter
from tests.support.llm_server import Reply, ScriptedLLM, ServerError, ToolCall, ToolCalls


@pytest.fixture(autouse=True)
def api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, SECRET_KEY)


def tool_messages(request_messages: list[dict]) -> list[dict]:
    return [m for m in request_messages if m.get("role") == "tool"]


async def test_prose_request_calls_a_tool_then_answers(tmp_path: Path, llm_server: ScriptedLLM) -> None:
    exporter = span_exporter()
    exporter.clear()
    llm_server.script(
        ToolCall(name="search", arguments={"query": "whales", "limit": 2}),
        Reply(text="I found two books about whales."),
    )
    async with ecosystem(tmp_path, config(llm_server)) as eco:
        reply = await eco.ask("Find me books about whales", conversation_id="conv-w")

        assert reply.kind is Kind.REPLY, reply.error
        assert reply.text() == "I found two books about whales."
        assert [s.query for s in eco.librarian.searches] == ["whales"]
        assert eco.librarian.callers == [("tester", True)]

        first, second = llm_server.requests
        assert first.messages[0]["role"] == "system" and "librarian" in first.messages[0]["content"]
        assert first.last_user_text == "Find me books about whales"
        assert {t["function"]["name"] for t in first.tools} == {"search", "lend"}
        (tool_result,) = tool_messages(second.messages)
        assert json.loads(tool_result["content"]) == {"result": {"hits": ["whales volume 1", "whales volume 2"]}}
        assert tool_result["tool_call_id"] == second.messages[-2]["tool_calls"][0]["id"]
        assert f"Bearer {SECRET_KEY}" == first.headers["authorization"]
        assert SECRET_KEY not in second.prompt_text

        usage = (await eco.command("usage")).data()[0]
        assert usage["total"]["calls"] == 2
        assert usage["per_mad"]["librarian"]["calls"] == 2
        assert usage["per_conversation"]["conv-w"]["input_tokens"] > 0
        assert usage["per_conversation"]["conv-w"]["output_tokens"] > 0
        filtered = (await eco.command("usage", caller="librarian", conversation_id="conv-w")).data()[0]
        assert filtered["total"] == usage["per_conversation"]["conv-w"]

        calls = await eco.events.wait_count(LLM_CALL, 2)
        assert all(c["caller"] == "librarian" and c["ok"] and c["conversation_id"] == "conv-w" for c in calls)
        assert sum(c["input_tokens"] for c in calls) == usage["total"]["input_tokens"]
        assert eco.events.on(VALIDATION_FAILURE) == []

    spans = [s for s in exporter.get_finished_spans() if s.name == "chat scripted"]
    assert len(spans) == 2
    attributes = spans[0].attributes or {}
    assert attributes["gen_ai.operation.name"] == "chat"
    assert attributes["gen_ai.provider.name"] == "openai"
    assert attributes["gen_ai.request.model"] == "scripted"
    assert attributes["gen_ai.response.model"] == "scripted"
    assert attributes["gen_ai.conversation.id"] == "conv-w"
    assert attributes["gen_ai.agent.name"] == "librarian"
    assert attributes["gen_ai.usage.input_tokens"] == calls[0]["input_tokens"]
    assert attributes["gen_ai.usage.output_tokens"] == calls[0]["output_tokens"]
    assert spans[0].kind.name == "CLIENT"
    llm_server.assert_script_consumed()


@pytest.mark.parametrize(
    ("bad_call", "problem", "expected_text"),
    [
        (
            ToolCall(name="search", arguments='{"query": "whales"'),
            "bad_json",
            'Invalid arguments for tool "search": not valid JSON',
        ),
        (ToolCall(name="shelve", arguments={"title": "x"}), "unknown_tool", 'Unknown tool "shelve". Available tools'),
        (ToolCall(name="", arguments={}), "unknown_tool", 'Unknown tool "". Available tools: lend, search.'),
        (
            ToolCall(name="search", arguments={"limit": 50}),
            "invalid_arguments",
            'Invalid arguments for tool "search": query: Field required; limit: Input should be less than or equal',
        ),
        (
            ToolCall(name="search", arguments={"query": "x", "shelf": 2}),
            "invalid_arguments",
            'Invalid arguments for tool "search": shelf: Extra inputs are not permitted',
        ),
    ],
)
async def test_invalid_tool_call_is_corrected_then_recovers(
    tmp_path: Path, llm_server: ScriptedLLM, bad_call: ToolCall, problem: str, expected_text: str
) -> None:
    llm_server.script(
        bad_call,
        ToolCall(name="search", arguments={"query": "whales"}),
        Reply(text="Three whale books."),
    )
    async with ecosystem(tmp_path, config(llm_server)) as eco:
        reply = await eco.ask("whales please")
        assert reply.kind is Kind.REPLY, reply.error
        assert reply.text() == "Three whale books."
        assert [s.query for s in eco.librarian.searches] == ["whales"]

        corrective = tool_messages(llm_server.requests[1].messages)[0]["content"]
        assert corrective.startswith(expected_text), corrective
        (failure,) = await eco.events.wait_count(VALIDATION_FAILURE, 1)
        assert failure["problem"] == problem
        assert failure["mad"] == "librarian"
        assert failure["conversation_id"] == "conv-1"
        assert failure["attempt"] == 1
    llm_server.assert_script_consumed()


async def test_field_names_of_invalid_arguments_are_published(tmp_path: Path, llm_server: ScriptedLLM) -> None:
    llm_server.script(ToolCall(name="search", arguments={"limit": 0}), Reply(text="done"))
    async with ecosystem(tmp_path, config(llm_server)) as eco:
        assert (await eco.ask("search")).text() == "done"
        (failure,) = await eco.events.wait_count(VALIDATION_FAILURE, 1)
        assert set(failure["fields"]) == {"query", "limit"}
        assert failure["tool"] == "search"
        assert eco.librarian.searches == []


async def test_exhausted_invalid_retries_end_in_typed_failure(tmp_path: Path, llm_server: ScriptedLLM) -> None:
    llm_server.script(ToolCall(name="search", arguments={"query": ""}, times=3))
    async with ecosystem(tmp_path, config(llm_server)) as eco:
        reply = await eco.ask("search for nothing")
        assert reply.kind is Kind.ERROR
        assert reply.error is not None
        assert reply.error.code == "llm_invalid_output"
        assert "3 invalid turns in a row" in reply.error.message
        assert [f.field for f in reply.error.fields] == ["query"]
        failures = await eco.events.wait_count(VALIDATION_FAILURE, 3)
        assert [f["attempt"] for f in failures] == [1, 2, 3]
        assert eco.librarian.searches == []
    assert len(llm_server.requests) == 3
    llm_server.assert_script_consumed()


async def test_step_limit_ends_in_typed_failure(tmp_path: Path, llm_server: ScriptedLLM) -> None:
    llm_server.script(ToolCall(name="search", arguments={"query": "again"}, times=None))
    async with ecosystem(tmp_path, config(llm_server)) as eco:
        reply = await eco.ask("loop forever")
        assert reply.error is not None and reply.error.code == "imperator_failed"
        assert "8 LLM steps" in reply.error.message
    assert len(llm_server.requests) == 8


async def test_tool_failure_is_fed_back_and_the_llm_recovers(tmp_path: Path, llm_server: ScriptedLLM) -> None:
    llm_server.script(
        ToolCalls(
            calls=[
                ToolCall(name="lend", arguments={"title": "lost"}),
                ToolCall(name="lend", arguments={"title": "Moby Dick"}),
            ]
        ),
        Reply(text="Moby Dick is yours; the other one is missing."),
    )
    async with ecosystem(tmp_path, config(llm_server)) as eco:
        reply = await eco.ask("lend me lost and Moby Dick", conversation_id=None)
        assert reply.text() == "Moby Dick is yours; the other one is missing."
        assert not any(e.recipient.startswith("stream.") for e in eco.events.envelopes)
        missing, lent = (json.loads(m["content"]) for m in tool_messages(llm_server.requests[1].messages))
        assert not any(r.stream for r in llm_server.requests)
        assert missing["error"]["code"] == "not_available"
        assert lent == {"result": "lent Moby Dick"}


async def test_empty_answer_is_corrected(tmp_path: Path, llm_server: ScriptedLLM) -> None:
    llm_server.script(Reply(text=""), Reply(text="Here is my answer."))
    async with ecosystem(tmp_path, config(llm_server)) as eco:
        assert (await eco.ask("hello")).text() == "Here is my answer."
        (failure,) = await eco.events.wait_count(VALIDATION_FAILURE, 1)
        assert failure["problem"] == "no_answer"
        assert "empty" in llm_server.requests[1].last_user_text


async def test_no_llm_configured_gets_a_prose_reply_on_how_to_configure(
    tmp_path: Path, llm_server: ScriptedLLM, monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "MAD_LLM_API_BASE", "MAD_LLM_MODEL"):
        monkeypatch.delenv(var, raising=False)
    async with ecosystem(tmp_path, FiedlerConfig()) as eco:
        reply = await eco.ask("what can you do?")
        assert reply.kind is Kind.REPLY
        text = reply.text()
        assert "No LLM is configured" in text
        assert "MAD_LLM_API_BASE" in text and "[[fiedler.models]]" in text and "OPENAI_API_KEY" in text
        command = await eco.command("search", to="librarian", query="whales")
        assert command.data() == [{"hits": ["whales volume 1", "whales volume 2", "whales volume 3"]}]
    assert llm_server.received == []


async def test_llm_failure_becomes_typed_error(tmp_path: Path, llm_server: ScriptedLLM) -> None:
    llm_server.script(ServerError(status=503, times=None))
    async with ecosystem(tmp_path, config(llm_server)) as eco:
        reply = await eco.ask("hello")
        assert reply.kind is Kind.ERROR and reply.error is not None
        assert reply.error.code == "imperator_failed"
        assert "llm" in reply.error.message.lower() and SECRET_KEY not in reply.error.message


async def test_stream_deltas_tool_and_done_events_arrive_in_order(tmp_path: Path, llm_server: ScriptedLLM) -> None:
    llm_server.script(
        ToolCall(name="search", arguments={"query": "moby dick"}),
        Reply(text="Call me Ishmael, said the book."),
    )
    async with ecosystem(tmp_path, config(llm_server)) as eco:
        reply = await eco.ask("a famous opening line", conversation_id="conv-s")
        assert reply.text() == "Call me Ishmael, said the book."
        topic = stream_topic("conv-s")
        await eco.events.wait(lambda log: any(d["event"] == "done" for d in log.on(topic)))
        envelopes = [e for e in eco.events.envelopes if e.recipient == topic]
        assert all(e.content[0].media_type == DELTA_MEDIA_TYPE for e in envelopes)
        deltas = eco.events.on(topic)
        assert [d["event"] for d in deltas if d["event"] != "delta"] == ["tool", "done"]
        assert deltas[0]["event"] == "tool" and deltas[0]["detail"] == {"tool": "search", "ok": True}
        texts = [d["text"] for d in deltas if d["event"] == "delta"]
        assert "".join(texts) == "Call me Ishmael, said the book."
        assert len(texts) == 6
        assert deltas[-1] == {"mad": "librarian", "text": "", "done": True, "event": "done", "detail": None}
    assert all(r.stream for r in llm_server.requests)
