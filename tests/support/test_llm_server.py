"""Tests of the scripted LLM double, driven by the real clients (litellm, openai) over loopback HTTP."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import aiohttp
import pytest
from pydantic import ValidationError

from tests.support.llm_server import (
    Hang,
    InvalidJSON,
    RateLimit,
    RecordedRequest,
    Reply,
    ScriptedLLM,
    ServerError,
    StreamCut,
    ToolCall,
    ToolCalls,
    Transcript,
    Turn,
    echo_last_user,
    load_script,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
API_KEY = "sk-test-secret-0123456789"
SEARCH_TOOL = {
    "type": "function",
    "function": {
        "name": "search",
        "description": "Search the library.",
        "parameters": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]},
    },
}


def _litellm() -> ModuleType:
    """Import litellm lazily, offline and quiet."""
    os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    import litellm

    litellm.suppress_debug_info = True
    return litellm


async def _complete(llm: ScriptedLLM, text: str = "hello", model: str = "m1", **kwargs: Any) -> Any:
    litellm = _litellm()
    messages = kwargs.pop("messages", [{"role": "user", "content": text}])
    return await litellm.acompletion(
        model=f"openai/{model}",
        messages=messages,
        api_base=llm.base_url,
        api_key=API_KEY,
        max_retries=0,
        **kwargs,
    )


async def _raw_sse(llm: ScriptedLLM, body: dict[str, Any]) -> list[str]:
    """The `data:` payloads exactly as they crossed the wire."""
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{llm.base_url}/chat/completions", json=body) as response,
    ):
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/event-stream")
        text = await response.text()
    events = [e for e in text.split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events), events
    return [e.removeprefix("data: ") for e in events]


async def test_base_url_is_loopback_v1(llm_server: ScriptedLLM) -> None:
    assert llm_server.base_url.startswith("http://127.0.0.1:")
    assert llm_server.base_url.endswith("/v1")


async def test_litellm_non_streaming_reply_with_word_count_usage(llm_server: ScriptedLLM) -> None:
    llm_server.script(Reply(text="hello there world"))

    response = await _complete(llm_server, "say hi now")

    assert response.choices[0].message.content == "hello there world"
    assert response.choices[0].finish_reason == "stop"
    assert response.model == "m1"
    usage = response.usage
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (3, 3, 6)
    sent = llm_server.last_request
    assert sent.model == "m1"
    assert sent.messages == [{"role": "user", "content": "say hi now"}]
    assert sent.headers["authorization"] == f"Bearer {API_KEY}"
    assert API_KEY not in sent.prompt_text
    assert llm_server.pending == []


async def test_usage_override_is_reported_verbatim(llm_server: ScriptedLLM) -> None:
    from tests.support.llm_server import Usage

    llm_server.script(Reply(text="x", usage=Usage(prompt_tokens=1000, completion_tokens=500, total_tokens=1500)))

    response = await _complete(llm_server)

    assert (response.usage.prompt_tokens, response.usage.completion_tokens) == (1000, 500)


async def test_litellm_streaming_with_usage_chunk(llm_server: ScriptedLLM) -> None:
    llm_server.script(Reply(text="one two three four"))

    stream = await _complete(llm_server, "count to four", stream=True, stream_options={"include_usage": True})
    chunks = [chunk async for chunk in stream]

    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "one two three four"
    usage = chunks[-1].usage
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (3, 4, 7)
    assert llm_server.last_request.body is not None
    assert llm_server.last_request.body["stream_options"] == {"include_usage": True}


async def test_sse_wire_format_matches_openai(llm_server: ScriptedLLM) -> None:
    llm_server.script(Reply(text="alpha beta"))
    body = {
        "model": "m1",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }

    payloads = await _raw_sse(llm_server, body)

    assert payloads[-1] == "[DONE]"
    chunks = [json.loads(p) for p in payloads[:-1]]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert len({c["id"] for c in chunks}) == 1
    choice_chunks, usage_chunk = chunks[:-1], chunks[-1]
    for chunk in choice_chunks:
        [choice] = chunk["choices"]
        assert set(choice) == {"index", "delta", "finish_reason"}
    assert choice_chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in choice_chunks) == "alpha beta"
    assert [c["choices"][0]["finish_reason"] for c in choice_chunks][-1] == "stop"
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"] == {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}


async def test_sse_without_include_usage_has_no_usage_chunk(llm_server: ScriptedLLM) -> None:
    llm_server.script(Reply(text="alpha"))
    body = {"model": "m1", "messages": [{"role": "user", "content": "hi"}], "stream": True}

    payloads = await _raw_sse(llm_server, body)

    chunks = [json.loads(p) for p in payloads[:-1]]
    assert all(c["choices"] for c in chunks)
    assert all("usage" not in c for c in chunks)


async def test_tool_call_round_trip(llm_server: ScriptedLLM) -> None:
    llm_server.script(
        ToolCall(name="search", arguments={"query": "cellular monolith"}, id="call_abc"),
        Reply(text="found it"),
    )
    messages: list[dict[str, Any]] = [{"role": "user", "content": "find it"}]

    first = await _complete(llm_server, messages=messages, tools=[SEARCH_TOOL])

    [call] = first.choices[0].message.tool_calls
    assert first.choices[0].finish_reason == "tool_calls"
    assert (call.id, call.function.name) == ("call_abc", "search")
    assert json.loads(call.function.arguments) == {"query": "cellular monolith"}
    assert llm_server.last_request.tools == [SEARCH_TOOL]

    messages += [
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "result: page 7"},
    ]
    second = await _complete(llm_server, messages=messages, tools=[SEARCH_TOOL])

    assert second.choices[0].message.content == "found it"
    sent = llm_server.last_request.messages
    assert sent[1]["tool_calls"][0]["id"] == "call_abc"
    assert sent[2] == {"role": "tool", "tool_call_id": "call_abc", "content": "result: page 7"}
    # Tool-call payloads in the history count as prompt tokens: 2 + (search + 2 arg words) + 3.
    assert second.usage.prompt_tokens == 2 + 4 + 3


async def test_streamed_parallel_tool_calls_with_raw_invalid_arguments(llm_server: ScriptedLLM) -> None:
    litellm = _litellm()
    llm_server.script(
        ToolCalls(
            text="let me look",
            calls=[ToolCall(name="search", arguments='{"query": "unterminated'), ToolCall(name="no_such_tool")],
        )
    )

    stream = await _complete(llm_server, tools=[SEARCH_TOOL], stream=True, stream_options={"include_usage": True})
    chunks = [chunk async for chunk in stream]
    message = litellm.stream_chunk_builder(chunks).choices[0].message

    assert message.content == "let me look"
    first, second = message.tool_calls
    assert (first.function.name, first.function.arguments) == ("search", '{"query": "unterminated')
    assert (second.function.name, second.function.arguments) == ("no_such_tool", "{}")
    assert first.id != second.id


async def test_rate_limit_raises_litellm_rate_limit_error_with_retry_after(llm_server: ScriptedLLM) -> None:
    litellm = _litellm()
    llm_server.script(RateLimit(retry_after=7))

    with pytest.raises(litellm.RateLimitError) as caught:
        await _complete(llm_server)

    assert caught.value.litellm_response_headers["retry-after"] == "7"
    assert caught.value.status_code == 429


async def test_server_error_raises_internal_server_error(llm_server: ScriptedLLM) -> None:
    litellm = _litellm()
    llm_server.script(ServerError(message="boom"))

    with pytest.raises(litellm.InternalServerError, match="boom"):
        await _complete(llm_server)


async def test_other_error_status_maps_to_its_litellm_type(llm_server: ScriptedLLM) -> None:
    litellm = _litellm()
    llm_server.script(ServerError(status=503, message="overloaded"))

    with pytest.raises(litellm.ServiceUnavailableError, match="overloaded"):
        await _complete(llm_server)


async def test_invalid_json_body_raises_litellm_error(llm_server: ScriptedLLM) -> None:
    litellm = _litellm()
    llm_server.script(InvalidJSON())

    with pytest.raises(litellm.InternalServerError, match="Expecting value"):
        await _complete(llm_server)


async def test_hang_times_out_client_and_close_releases_it() -> None:
    litellm = _litellm()
    async with ScriptedLLM(Hang(), Hang()) as llm:
        with pytest.raises(litellm.Timeout):
            await _complete(llm, timeout=0.2)
        pending = asyncio.create_task(_complete(llm))
        await llm.wait_for_requests(2)
        assert not pending.done()
    with pytest.raises(litellm.ServiceUnavailableError):
        await asyncio.wait_for(pending, 10)


async def test_delay_is_interruptible_and_does_not_block_other_requests() -> None:
    litellm = _litellm()
    async with ScriptedLLM(Reply(model="slow", text="late", delay=300), Reply(model="fast", text="now")) as llm:
        slow = asyncio.create_task(_complete(llm, model="slow"))
        await llm.wait_for_requests(1)
        fast = await _complete(llm, model="fast")
        assert fast.choices[0].message.content == "now"
        assert not slow.done()
    with pytest.raises(litellm.ServiceUnavailableError):
        await asyncio.wait_for(slow, 10)


async def test_chunk_delay_still_delivers_whole_stream(llm_server: ScriptedLLM) -> None:
    llm_server.script(Reply(text="a b c", chunk_delay=0.01))

    stream = await _complete(llm_server, stream=True)

    assert "".join([c.choices[0].delta.content or "" async for c in stream]) == "a b c"


async def test_stream_cut_mid_way_raises_after_partial_content(
    llm_server: ScriptedLLM, caplog: pytest.LogCaptureFixture
) -> None:
    litellm = _litellm()
    llm_server.script(StreamCut(text="one two three four five", after_chunks=2))
    received: list[str] = []

    stream = await _complete(llm_server, stream=True)
    # litellm wraps a mid-stream drop so a Router can fall back with the partial text.
    with pytest.raises(litellm.exceptions.MidStreamFallbackError, match="payload is not completed"):
        async for chunk in stream:
            received.append(chunk.choices[0].delta.content or "")

    assert "".join(received) == "one two"
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR and r.name.startswith("aiohttp")]


async def test_cut_non_streaming_body_raises_connection_error(llm_server: ScriptedLLM) -> None:
    litellm = _litellm()
    llm_server.script(StreamCut())

    with pytest.raises(litellm.InternalServerError, match="Connection error"):
        await _complete(llm_server)


async def test_turns_target_models_for_fallback(llm_server: ScriptedLLM) -> None:
    litellm = _litellm()
    llm_server.script(Reply(model="model-b", text="b answers"), RateLimit(model="model-a", retry_after=None))
    params = {"api_base": llm_server.base_url, "api_key": API_KEY, "max_retries": 0}
    router = litellm.Router(
        model_list=[
            {"model_name": "a", "litellm_params": {"model": "openai/model-a", **params}},
            {"model_name": "b", "litellm_params": {"model": "openai/model-b", **params}},
        ],
        fallbacks=[{"a": ["b"]}],
        num_retries=0,
    )

    response = await router.acompletion(model="a", messages=[{"role": "user", "content": "hi"}])

    assert response.choices[0].message.content == "b answers"
    assert [r.model for r in llm_server.requests] == ["model-a", "model-b"]
    llm_server.assert_script_consumed()


async def test_sticky_turn_answers_every_matching_request(llm_server: ScriptedLLM) -> None:
    litellm = _litellm()
    llm_server.script(RateLimit(model="down", times=None), Reply(text="ok", times=2))

    for _ in range(3):
        with pytest.raises(litellm.RateLimitError):
            await _complete(llm_server, model="down")
    assert (await _complete(llm_server, model="up")).choices[0].message.content == "ok"
    assert (await _complete(llm_server, model="up")).choices[0].message.content == "ok"
    assert [type(t) for t in llm_server.pending] == [RateLimit]
    llm_server.assert_script_consumed()


async def test_sync_and_async_responders(llm_server: ScriptedLLM) -> None:
    llm_server.respond_with(echo_last_user)
    echoed = await _complete(llm_server, "repeat after me")
    assert echoed.choices[0].message.content == "repeat after me"

    async def shout(request: RecordedRequest) -> Turn:
        return Reply(text=request.last_user_text.upper())

    llm_server.respond_with(shout)
    llm_server.script(Reply(text="scripted first"))
    assert (await _complete(llm_server, "quiet")).choices[0].message.content == "scripted first"
    assert (await _complete(llm_server, "quiet")).choices[0].message.content == "QUIET"


async def test_exhausted_script_answers_500_and_is_reported(llm_server: ScriptedLLM) -> None:
    litellm = _litellm()
    llm_server.script(Reply(model="other", text="never asked"))

    with pytest.raises(litellm.InternalServerError, match="no scripted turn for model 'm1'"):
        await _complete(llm_server)

    with pytest.raises(AssertionError, match=r"1 scripted turn\(s\) never used.*1 request\(s\) had no turn"):
        llm_server.assert_script_consumed()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ("not json", "body"),
        ({"messages": [{"role": "user", "content": "x"}]}, "model"),
        ({"model": "m1", "messages": []}, "messages"),
        ({"model": "m1", "messages": [{"content": "x"}]}, "messages[0].role"),
    ],
)
async def test_bad_request_gets_400_naming_the_field(llm_server: ScriptedLLM, body: Any, field: str) -> None:
    llm_server.script(Reply(text="unused"))
    data = body if isinstance(body, str) else json.dumps(body)

    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{llm_server.base_url}/chat/completions", data=data) as response,
    ):
        status, error = response.status, (await response.json())["error"]

    assert status == 400
    assert error["param"] == field
    assert error["message"].startswith(f"{field}: ")
    assert len(llm_server.pending) == 1
    assert llm_server.last_request.raw_body == data


async def test_official_openai_client(llm_server: ScriptedLLM) -> None:
    import openai

    llm_server.script(Reply(text="from openai"), Reply(text="streamed reply"))
    client = openai.AsyncOpenAI(base_url=llm_server.base_url, api_key=API_KEY, max_retries=0)
    try:
        models = await client.models.list()
        completion = await client.chat.completions.create(
            model="scripted", messages=[{"role": "user", "content": "hi"}]
        )
        stream = await client.chat.completions.create(
            model="scripted",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]
    finally:
        await client.close()

    assert [m.id for m in models.data] == ["scripted"]
    assert completion.choices[0].message.content == "from openai"
    assert completion.usage is not None and completion.usage.total_tokens == 3
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "streamed reply"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 2
    assert [r.path for r in llm_server.received] == ["/v1/models", "/v1/chat/completions", "/v1/chat/completions"]


async def test_transcriptions_answer_the_official_client_in_order(llm_server: ScriptedLLM) -> None:
    import openai

    llm_server.script_transcripts(Transcript(text="first words"), ServerError(status=503))
    audio = b"OggS" + bytes(range(200))
    client = openai.AsyncOpenAI(base_url=llm_server.base_url, api_key=API_KEY, max_retries=0)
    try:
        first = await client.audio.transcriptions.create(
            model="whisper-1", file=("clip.ogg", audio, "audio/ogg"), language="pt"
        )
        with pytest.raises(openai.InternalServerError):
            await client.audio.transcriptions.create(model="whisper-1", file=("clip.ogg", audio, "audio/ogg"))
        with pytest.raises(openai.InternalServerError, match="no scripted transcript"):
            await client.audio.transcriptions.create(model="whisper-1", file=("clip.ogg", audio, "audio/ogg"))
    finally:
        await client.close()
    assert first.text == "first words"
    recorded = llm_server.transcriptions
    assert len(recorded) == 3
    assert (recorded[0].model, recorded[0].filename, recorded[0].content_type) == ("whisper-1", "clip.ogg", "audio/ogg")
    assert recorded[0].audio == audio and recorded[0].fields["language"] == "pt"
    assert llm_server.requests == [], "transcriptions are not chat requests"


async def test_wait_for_requests_times_out_with_a_clear_error(llm_server: ScriptedLLM) -> None:
    with pytest.raises(TimeoutError, match="got 0 chat request"):
        await llm_server.wait_for_requests(1, timeout=0.05)


def test_nested_tool_call_rejects_turn_fields() -> None:
    with pytest.raises(ValidationError, match=r"calls\[0\]\.delay"):
        ToolCalls(calls=[ToolCall(name="search", delay=1)])


def test_load_script_names_the_bad_field(tmp_path: Path) -> None:
    path = tmp_path / "script.json"
    path.write_text(json.dumps([{"kind": "reply", "text": "ok"}, {"kind": "rate_limit", "retry_after": -1}]))

    with pytest.raises(ValidationError, match=r"1\.rate_limit\.retry_after"):
        load_script(path)


@pytest.mark.slow
async def test_runs_as_a_script_in_another_process(tmp_path: Path) -> None:
    script = tmp_path / "script.json"
    script.write_text(json.dumps([{"kind": "reply", "text": "from a process"}]))
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.support.llm_server",
        "--script",
        str(script),
        stdout=asyncio.subprocess.PIPE,
        cwd=REPO_ROOT,
    )
    try:
        assert process.stdout is not None
        base_url = (await asyncio.wait_for(process.stdout.readline(), 30)).decode().strip()
        assert base_url.startswith("http://127.0.0.1:")
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"{base_url}/chat/completions", json=body) as response,
        ):
            answer = await response.json()
        assert answer["choices"][0]["message"]["content"] == "from a process"
    finally:
        process.terminate()
        assert await asyncio.wait_for(process.wait(), 30) == 0
