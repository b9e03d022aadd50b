"""The OpenAI-compatible door, driven by the official ``openai`` client, unchanged, against the live gateway."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import openai
import pytest

from tests.gateway.conftest import GATEWAY_MADS
from tests.support.ecosystem import Running, ecosystem_settings, running
from tests.support.llm_server import Reply, ScriptedLLM, ServerError, ToolCall, ToolCalls, Usage


def client_for(eco: Running, token: str | None = None) -> openai.AsyncOpenAI:
    # max_retries=0: a refusal is asserted as such, not retried.
    return openai.AsyncOpenAI(base_url=eco.at("/v1"), api_key=token or eco.token, max_retries=0)


@pytest.fixture
async def oai(ecosystem: Running) -> AsyncIterator[openai.AsyncOpenAI]:
    async with client_for(ecosystem) as client:
        yield client


async def test_models_are_the_mads_with_an_imperator(ecosystem: Running, oai: openai.AsyncOpenAI) -> None:
    page = await oai.models.list()
    ids = [m.id for m in page.data]
    assert "grace" in ids and "fiedler" in ids
    assert all(m.object == "model" and m.owned_by == "mad-ecosystem" for m in page.data)
    assert (await oai.models.retrieve("grace")).id == "grace"


async def test_a_completion_is_a_turn_stored_by_rogers_with_its_usage(
    ecosystem: Running, oai: openai.AsyncOpenAI, llm_server: ScriptedLLM
) -> None:
    llm_server.script(
        Reply(text="Hello from Grace.", usage=Usage(prompt_tokens=11, completion_tokens=4, total_tokens=15))
    )
    raw = await oai.chat.completions.with_raw_response.create(
        model="grace", messages=[{"role": "user", "content": "Say hello"}]
    )
    answer = raw.parse()
    assert answer.object == "chat.completion" and answer.model == "grace"
    assert answer.choices[0].message.role == "assistant"
    assert answer.choices[0].message.content == "Hello from Grace."
    assert answer.choices[0].finish_reason == "stop"
    assert answer.usage is not None
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens, answer.usage.total_tokens) == (11, 4, 15)
    conversation = raw.headers["X-Conversation-Id"]
    assert answer.model_extra is not None and answer.model_extra["conversation_id"] == conversation
    texts = [m["text"] for m in await ecosystem.history(conversation)]
    assert "Say hello" in texts and "Hello from Grace." in texts
    sent = llm_server.last_request
    assert sent.last_user_text == "Say hello"


async def test_another_mad_is_another_model(
    ecosystem: Running, oai: openai.AsyncOpenAI, llm_server: ScriptedLLM
) -> None:
    llm_server.script(Reply(text="I route every LLM call."))
    raw = await oai.chat.completions.with_raw_response.create(
        model="fiedler", messages=[{"role": "user", "content": "What do you do?"}]
    )
    assert raw.parse().choices[0].message.content == "I route every LLM call."
    assert raw.parse().model == "fiedler"
    [request] = [
        m
        for m in await ecosystem.history(raw.headers["X-Conversation-Id"])
        if m["kind"] == "request" and m["text"] == "What do you do?"
    ]
    assert request["recipient"] == "fiedler" and request["sender"] == "user.tester"
    assert "You are fiedler" in llm_server.last_request.messages[0]["content"]


async def test_the_conversation_header_keeps_a_conversation_together(
    ecosystem: Running, oai: openai.AsyncOpenAI, llm_server: ScriptedLLM
) -> None:
    llm_server.script(Reply(text="Noted: your colour is teal."), Reply(text="It is teal."))
    raw = await oai.chat.completions.with_raw_response.create(
        model="grace", messages=[{"role": "user", "content": "My colour is teal."}]
    )
    conversation = raw.headers["X-Conversation-Id"]
    second = await oai.chat.completions.create(
        model="grace",
        messages=[{"role": "user", "content": "What is my colour?"}],
        extra_headers={"X-Conversation-Id": conversation},
    )
    assert second.model_extra is not None and second.model_extra["conversation_id"] == conversation
    recalled = [m.get("content") for m in llm_server.last_request.messages]
    assert "My colour is teal." in recalled and "Noted: your colour is teal." in recalled
    assert len(await ecosystem.history(conversation)) >= 4


async def test_without_the_header_earlier_messages_are_given_as_context(
    oai: openai.AsyncOpenAI, llm_server: ScriptedLLM
) -> None:
    llm_server.script(Reply(text="Teal."))
    await oai.chat.completions.create(
        model="grace",
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "My colour is teal."},
            {"role": "assistant", "content": "Noted."},
            {"role": "user", "content": [{"type": "text", "text": "What is my colour?"}]},
        ],
    )
    text = llm_server.last_request.last_user_text
    assert "Instructions: Be brief." in text and "User: My colour is teal." in text
    assert "Assistant: Noted." in text and text.endswith("What is my colour?")


async def test_a_streamed_reply_adds_up_to_the_reply_and_ends_with_usage(
    ecosystem: Running, oai: openai.AsyncOpenAI, llm_server: ScriptedLLM
) -> None:
    llm_server.script(
        Reply(text="one two three four five", usage=Usage(prompt_tokens=7, completion_tokens=5, total_tokens=12))
    )
    stream = await oai.chat.completions.create(
        model="grace",
        messages=[{"role": "user", "content": "count"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces: list[str] = []
    finishes: list[str] = []
    usage = None
    async for part in stream:
        assert part.object == "chat.completion.chunk" and part.model == "grace"
        if part.usage is not None:
            assert part.choices == []
            usage = part.usage
        for choice in part.choices:
            pieces.append(choice.delta.content or "")
            if choice.finish_reason:
                finishes.append(choice.finish_reason)
    assert "".join(pieces) == "one two three four five"
    assert finishes == ["stop"]
    assert usage is not None and (usage.prompt_tokens, usage.completion_tokens) == (7, 5)
    assert llm_server.last_request.stream, "the MAD's LLM call streamed too"


async def test_a_stream_ends_with_the_answer_when_the_llm_spoke_before_a_tool_call(
    oai: openai.AsyncOpenAI, llm_server: ScriptedLLM
) -> None:
    llm_server.script(
        ToolCalls(text="Let me look.", calls=[ToolCall(name="list_mads")]), Reply(text="Rogers keeps conversations.")
    )
    stream = await oai.chat.completions.create(
        model="grace", messages=[{"role": "user", "content": "who stores things?"}], stream=True
    )
    text = "".join([choice.delta.content or "" async for part in stream for choice in part.choices])
    assert text.endswith("Rogers keeps conversations.") and text.count("Rogers keeps conversations.") == 1, text
    assert "look.Rogers" not in text, "the answer starts after the words the LLM wrote before its tool call"
    assert len(llm_server.requests) == 2


async def test_a_slash_command_answers_without_an_llm(oai: openai.AsyncOpenAI, llm_server: ScriptedLLM) -> None:
    answer = await oai.chat.completions.create(model="grace", messages=[{"role": "user", "content": "/help"}])
    assert "rogers" in (answer.choices[0].message.content or "")
    assert answer.usage is not None and answer.usage.total_tokens == 0
    assert llm_server.received == []


async def test_a_wrong_token_is_401_in_the_openai_shape(ecosystem: Running) -> None:
    async with client_for(ecosystem, token="mad_not-a-real-token") as client:
        with pytest.raises(openai.AuthenticationError) as caught:
            await client.chat.completions.create(model="grace", messages=[{"role": "user", "content": "hi"}])
    assert caught.value.status_code == 401
    body = caught.value.body
    assert isinstance(body, dict) and body["type"] == "authentication_error" and body["code"] == "unauthorized"


async def test_an_unknown_model_is_404_naming_the_field(oai: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        await oai.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    body = caught.value.body
    assert isinstance(body, dict) and body["code"] == "model_not_found" and body["param"] == "body.model"
    assert "grace" in body["message"]


async def test_unsupported_input_is_refused_naming_the_field(oai: openai.AsyncOpenAI, llm_server: ScriptedLLM) -> None:
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    with pytest.raises(openai.UnprocessableEntityError) as caught:
        await oai.chat.completions.create(model="grace", messages=[{"role": "user", "content": "hi"}], tools=[tool])
    body = caught.value.body
    assert isinstance(body, dict) and body["type"] == "invalid_request_error" and body["param"] == "body.tools"
    with pytest.raises(openai.UnprocessableEntityError) as caught:
        await oai.chat.completions.create(model="grace", messages=[{"role": "assistant", "content": "hi"}])
    assert isinstance(caught.value.body, dict) and caught.value.body["param"] == "body.messages"
    assert llm_server.received == []


async def test_another_persons_conversation_is_not_found(ecosystem: Running, llm_server: ScriptedLLM) -> None:
    llm_server.script(Reply(text="private"))
    async with ecosystem.signed_in_as("alice") as alice, client_for(alice) as as_alice:
        raw = await as_alice.chat.completions.with_raw_response.create(
            model="grace", messages=[{"role": "user", "content": "mine"}]
        )
        conversation = raw.headers["X-Conversation-Id"]
        async with ecosystem.signed_in_as("bob") as bob, client_for(bob) as as_bob:
            with pytest.raises(openai.NotFoundError):
                await as_bob.chat.completions.create(
                    model="grace",
                    messages=[{"role": "user", "content": "let me in"}],
                    extra_headers={"X-Conversation-Id": conversation},
                )
    assert len(llm_server.received) == 1


async def test_a_failing_llm_is_a_server_error_and_a_stream_error(
    oai: openai.AsyncOpenAI, llm_server: ScriptedLLM
) -> None:
    llm_server.script(ServerError(status=500))
    with pytest.raises(openai.InternalServerError) as caught:
        await oai.chat.completions.create(model="grace", messages=[{"role": "user", "content": "hi"}])
    assert caught.value.status_code == 502
    assert isinstance(caught.value.body, dict) and caught.value.body["type"] == "server_error"
    llm_server.script(ServerError(status=500))
    stream = await oai.chat.completions.create(model="grace", messages=[{"role": "user", "content": "hi"}], stream=True)
    with pytest.raises(openai.APIError) as streamed:
        async for _ in stream:
            pass
    assert isinstance(streamed.value.body, dict) and streamed.value.body["code"] == "imperator_failed"


async def test_the_rate_limit_is_429_for_the_openai_client(tmp_path: Path, llm_server: ScriptedLLM) -> None:
    settings = ecosystem_settings(
        tmp_path, llm_server.base_url, mads=GATEWAY_MADS, gateway={"rate_per_principal": 0.01, "burst_per_principal": 1}
    )
    async with running(settings) as eco, client_for(eco) as client:
        await client.models.list()
        with pytest.raises(openai.RateLimitError) as caught:
            await client.models.list()
    assert caught.value.response.headers["Retry-After"]
    assert isinstance(caught.value.body, dict) and caught.value.body["type"] == "rate_limit_error"
