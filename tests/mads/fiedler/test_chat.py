"""Fiedler's chat tool against the scripted OpenAI-compatible server: retries, fallbacks, faults, streaming, cost."""

from __future__ import annotations

from pathlib import Path

import pytest
from opentelemetry.trace import StatusCode

from bus.envelope import CommandPart, Envelope, Kind, deadline_in
from bus.topics import LLM_CALL
from mads.core.base import MadContext
from mads.fiedler.schemas import FiedlerConfig
from mads.mcnamara import McNamara
from mads.turing import Turing
from mads.turing.policy import PolicyRule
from mads.turing.schemas import TuringConfig
from tests.mads.fiedler.harness import KEY_ENV, SECRET_KEY, Eco, config, ecosystem, model, span_exporter
from tests.support.llm_server import (
    Hang,
    InvalidJSON,
    RateLimit,
    Reply,
    ScriptedLLM,
    ServerError,
    StreamCut,
    ToolCall,
    ToolCalls,
)


@pytest.fixture(autouse=True)
def api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, SECRET_KEY)


async def chat_error(eco: Eco, **arguments: object) -> tuple[str, str]:
    reply = await eco.chat(**arguments)  # type: ignore[arg-type]
    assert reply.kind is Kind.ERROR, reply
    assert reply.error is not None
    assert SECRET_KEY not in reply.error.message
    assert "Traceback" not in reply.error.message
    return reply.error.code, reply.error.message


async def test_plain_chat_returns_a_typed_result(tmp_path: Path, llm_server: ScriptedLLM) -> None:
    llm_server.script(Reply(text="hello back to you"))
    async with ecosystem(tmp_path, config(llm_server)) as eco:
        reply = await eco.chat(as_sender="hopper", in_conversation="c-plain")
        (result,) = reply.data()
        assert result == {
            "model": "main",
            "content": "hello back to you",
            "tool_calls": [],
            "finish_reason": "stop",
            "usage": {"input_tokens": 2, "output_tokens": 4},
            "cost_usd": 0.0,
        }
        (event,) = await eco.events.wait_count(LLM_CALL, 1)
        assert event["caller"] == "hopper" and event["model"] == "main" and event["ok"] is True
        assert event["input_tokens"] == 2 and event["output_tokens"] == 4
    assert llm_server.last_request.headers["authorization"] == f"Bearer {SECRET_KEY}"


async def test_caller_defaults_to_the_sender(tmp_path: Path, llm_server: ScriptedLLM) -> None:
    llm_server.script(Reply(text="hi"))
    async with ecosystem(tmp_path, config(llm_server)) as eco:
        await eco.chat()
        usage = (await eco.command("usage")).data()[0]
        assert list(usage["per_mad"]) == ["tester"]


async def test_tool_calls_are_returned_raw(tmp_path: Path, llm_server: ScriptedLLM) -> None:
    llm_server.script(
        ToolCalls(
            calls=[ToolCall(name="search", arguments='{"query": "wha', id="c1"), ToolCall(name="lend", id="c2")],
            text="Let me look.",
        )
    )
    search = {"type": "function", "function": {"name": "search", "parameters": {"type": "object"}}}
    async with ecosystem(tmp_path, config(llm_server)) as eco:
        (result,) = (await eco.chat(tools=[search])).data()
        assert result["tool_calls"] == [
            {"id": "c1", "name": "search", "arguments": '{"query": "wha'},
            {"id": "c2", "name": "lend", "arguments": "{}"},
        ]
        assert result["content"] == "Let me look."
        assert result["finish_reason"] == "tool_calls"
    assert llm_server.last_request.tools == [search]


async def test_rate_limit_is_retried(tmp_path: Path, llm_server: ScriptedLLM) -> None:
    llm_server.script(RateLimit(retry_after=0.01), Reply(text="second time lucky"))
    async with ecosystem(tmp_path, config(llm_server, retries=1)) as eco:
        (result,) = (await eco.chat()).data()
        assert result["content"] == "second time lucky"
    assert len(llm_server.requests) == 2


async def test_rate_limit_after_retries_is_a_clear_failure(tmp_path: Path, llm_server: ScriptedLLM) -> None:
    llm_server.script(RateLimit(retry_after=0.01, times=2))
    async with ecosystem(tmp_path, config(llm_server, retries=1)) as eco:
        code, message = await chat_error(eco)
        assert code == "llm_rate_limited"
        assert "model 'main' (openai/scripted): rate limited after retries" in message
        (event,) = await eco.events.wait_count(LLM_CALL, 1)
        assert event["ok"] is False and event["error_code"] == "llm_rate_limited"
        usage = (await eco.command("usage")).data()[0]
        assert usage["total"]["failed_calls"] == 1
    assert len(llm_server.requests) == 2


async def test_failing_model_falls_back_to_the_next(tmp_path: Path, llm_server: ScriptedLLM) -> None:
    exporter = span_exporter()
    exporter.clear()
    llm_server.script(ServerError(model="model-a", status=500), Reply(model="model-b", text="B answers"))
    cfg = config(
        llm_server,
        model(llm_server, "a", "model-a", roles=["imperator"]),
        model(llm_server, "b", "model-b"),
        fallbacks={"a": ["b"]},
    )
    async with ecosystem(tmp_path, cfg) as eco:
        (result,) = (await eco.chat()).data()
        assert result["model"] == "b"
        assert result["content"] == "B answers"
        usage = (await eco.command("usage")).data()[0]
        assert list(usage["per_model"]) == ["b"]
    assert [r.model for r in llm_server.requests] == ["model-a", "model-b"]
    (span,) = [s for s in exporter.get_finished_spans() if s.name == "chat model-a"]
    assert span.attributes is not None
    assert span.attributes["gen_ai.response.model"] == "model-b"


async def test_timeout_is_a_clear_failure(tmp_path: Path, llm_server: ScriptedLLM) -> None:
    exporter = span_exporter()
    exporter.clear()
    llm_server.script(Hang(times=None))
    async with ecosystem(tmp_path, config(llm_server, model(llm_server, timeout=0.3))) as eco:
        code, message = await chat_error(eco, in_conversation="c-slow")
        assert code == "llm_timeout"
        assert message == "model 'main' (openai/scripted): no answer within 0.3s (after retries)"
    (span,) = [s for s in exporter.get_finished_spans() if s.name == "chat scripted"]
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes is not None and span.attributes["error.type"] == "llm_timeout"


async def test_invalid_json_body_is_a_clear_failure(tmp_path: Path, llm_server: ScriptedLLM) -> None:
    llm_server.script(InvalidJSON())
    async with ecosystem(tmp_path, config(llm_server)) as eco:
        code, message = await chat_error(eco)
        assert code == "llm_bad_response"
        assert message == "model 'main' (openai/scripted): the provider's response was not valid JSON"


async def test_auth_failure_never_shows_the_key(tmp_path: Path, llm_server: ScriptedLLM) -> None:
    llm_server.script(ServerError(status=401, message=f"Incorrect API key provided: {SECRET_KEY}"))
    async with ecosystem(tmp_path, config(llm_server)) as eco:
        code, message = await chat_error(eco)
        assert code == "llm_auth_failed"
        assert "rejected the API key" in message


async def test_provider_detail_is_scrubbed_of_keys(tmp_path: Path, llm_server: ScriptedLLM) -> None:
    llm_server.script(ServerError(status=400, message=f"bad request made with {SECRET_KEY}"))
    async with ecosystem(tmp_path, config(llm_server)) as eco:
        code, message = await chat_error(eco)
        assert code == "llm_bad_request"
        assert "bad request made with [redacted]" in message


async def test_missing_key_names_its_source(tmp_path: Path, llm_server: ScriptedLLM, monkeypatch) -> None:
    monkeypatch.delenv(KEY_ENV)
    async with ecosystem(tmp_path, config(llm_server)) as eco:
        code, message = await chat_error(eco)
        assert code == "llm_key_unavailable"
        assert message == f"model 'main': environment variable {KEY_ENV} is not set"
    assert llm_server.received == []


async def test_unknown_model_and_no_llm(tmp_path: Path, llm_server: ScriptedLLM, monkeypatch) -> None:
    async with ecosystem(tmp_path, config(llm_server)) as eco:
        code, message = await chat_error(eco, model="gpt-9")
        assert (code, message) == ("unknown_model", "unknown model 'gpt-9' (models: main)")
    for var in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "MAD_LLM_API_BASE", "MAD_LLM_MODEL"):
        monkeypatch.delenv(var, raising=False)
    async with ecosystem(tmp_path / "bare", FiedlerConfig()) as eco:
        code, message = await chat_error(eco)
        assert code == "no_llm_configured"
        assert "export MAD_LLM_API_BASE=" in message
    assert llm_server.received == []


async def test_bad_chat_arguments_name_the_field(tmp_path: Path, llm_server: ScriptedLLM) -> None:
    async with ecosystem(tmp_path, config(llm_server)) as eco:
        reply = await eco.chat(messages=[{"role": "tool", "content": "x"}], stream_topic="events.x")
        assert reply.error is not None and reply.error.code == "invalid_arguments"
        fields = {f.field for f in reply.error.fields}
        assert fields == {"content.0.arguments.messages.0", "content.0.arguments.stream_topic"}
    assert llm_server.received == []


async def test_streamed_text_deltas_are_published_in_order(tmp_path: Path, llm_server: ScriptedLLM) -> None:
    llm_server.script(Reply(text="one two three four five"))
    async with ecosystem(tmp_path, config(llm_server)) as eco:
        (result,) = (await eco.chat(stream=True, in_conversation="c9", as_sender="hopper")).data()
        assert result["content"] == "one two three four five"
        assert result["usage"] == {"input_tokens": 2, "output_tokens": 5}
        deltas = await eco.events.wait_count("stream.c9", 5)
        assert [d["text"] for d in deltas] == ["one", " two", " three", " four", " five"]
        assert {d["mad"] for d in deltas} == {"hopper"}
        assert all(e.conversation_id == "c9" for e in eco.events.envelopes if e.recipient == "stream.c9")
    assert llm_server.last_request.stream


async def test_streamed_tool_call_deltas_are_assembled(tmp_path: Path, llm_server: ScriptedLLM) -> None:
    llm_server.script(ToolCall(name="search", arguments={"query": "moby dick", "limit": 2}, id="call-7"))
    async with ecosystem(tmp_path, config(llm_server)) as eco:
        (result,) = (await eco.chat(stream=True, in_conversation="c10")).data()
        assert result["tool_calls"] == [
            {"id": "call-7", "name": "search", "arguments": '{"query": "moby dick", "limit": 2}'}
        ]
        assert result["finish_reason"] == "tool_calls"
        assert result["usage"]["output_tokens"] > 0


async def test_stream_cut_is_a_clear_failure(tmp_path: Path, llm_server: ScriptedLLM) -> None:
    llm_server.script(StreamCut(after_chunks=2))
    async with ecosystem(tmp_path, config(llm_server)) as eco:
        code, _ = await chat_error(eco, stream=True, in_conversation="c11")
        assert code.startswith("llm_")
        (event,) = await eco.events.wait_count(LLM_CALL, 1)
        assert event["ok"] is False


async def test_configured_prices_and_cost_map(tmp_path: Path, llm_server: ScriptedLLM) -> None:
    llm_server.script(
        Reply(text="a b c d", usage={"prompt_tokens": 1000, "completion_tokens": 100, "total_tokens": 1100})
    )
    llm_server.script(
        Reply(text="a b c d", usage={"prompt_tokens": 1000, "completion_tokens": 100, "total_tokens": 1100})
    )
    cfg = config(
        llm_server,
        model(llm_server, "priced", input_cost_per_token=0.001, output_cost_per_token=0.002),
        model(llm_server, "mapped", "gpt-4o-mini"),
    )
    async with ecosystem(tmp_path, cfg) as eco:
        (priced,) = (await eco.chat(model="priced", in_conversation="c-cost")).data()
        assert priced["cost_usd"] == pytest.approx(1000 * 0.001 + 100 * 0.002)
        (mapped,) = (await eco.chat(model="mapped", in_conversation="c-cost")).data()
        assert mapped["cost_usd"] == pytest.approx(1000 * 0.15e-6 + 100 * 0.6e-6)
        usage = (await eco.command("usage", conversation_id="c-cost")).data()[0]
        assert usage["total"]["cost_usd"] == pytest.approx(priced["cost_usd"] + mapped["cost_usd"])
        assert usage["total"]["input_tokens"] == 2000


class KeyKeeper(Turing):
    """The real Turing MAD with a policy for this test: the tester stores, Fiedler reads."""

    def __init__(self, ctx: MadContext, *, instance: str | None = None) -> None:
        ctx.config = TuringConfig(
            policy=[
                PolicyRule(principal="fiedler", paths=("llm/**",), capabilities=frozenset({"read"})),
                PolicyRule(principal="tester", paths=("llm/**",), capabilities=frozenset({"write"})),
            ]
        )
        super().__init__(ctx, instance=instance)


async def test_key_from_turing_is_read_at_call_time(tmp_path: Path, llm_server: ScriptedLLM) -> None:
    llm_server.script(Reply(text="ok"))
    spec = model(llm_server).model_copy(update={"api_key_env": None, "api_key_secret": "llm/openai"})
    async with ecosystem(tmp_path, config(llm_server, spec), McNamara, KeyKeeper) as eco:
        stored = await eco.bus.request(
            Envelope(
                sender="tester",
                recipient="turing",
                kind=Kind.REQUEST,
                deadline=deadline_in(30),
                content=[CommandPart(tool="put", arguments={"path": "llm/openai", "value": SECRET_KEY + "-turing"})],
            )
        )
        assert stored.kind is Kind.REPLY, stored.error
        (result,) = (await eco.chat()).data()
        assert result["content"] == "ok"
        (view,) = (await eco.command("models")).data()[0]["models"]
        assert view["key_source"] == "turing:llm/openai"
    assert llm_server.last_request.headers["authorization"] == f"Bearer {SECRET_KEY}-turing"
    async with ecosystem(tmp_path, config(llm_server, spec)) as eco:
        code, message = await chat_error(eco)
        assert code == "llm_key_unavailable"
        assert message == "model 'main': secret 'llm/openai' could not be read from turing (no_route)"
