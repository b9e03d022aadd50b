"""Fiedler keeps known secrets away from providers and off the bus: prompts, replies, deltas, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bus.envelope import Kind
from bus.topics import LLM_CALL
from mads.core.redaction import REDACTED, SecretRedactor
from tests.mads.fiedler.harness import KEY_ENV, SECRET_KEY, config, ecosystem
from tests.support.llm_server import Reply, ScriptedLLM, ServerError, ToolCall

PASTED = "ghp-pasted-canary-4d1e8a02b7"


@pytest.fixture
def redactor(monkeypatch: pytest.MonkeyPatch) -> SecretRedactor:
    """A fresh real redactor, handed to Fiedler as the host hands it the process's (and Turing feeds it)."""
    monkeypatch.setenv(KEY_ENV, SECRET_KEY)
    return SecretRedactor()


async def test_provider_keys_from_the_environment_are_registered_at_start(
    tmp_path: Path, llm_server: ScriptedLLM, redactor: SecretRedactor
) -> None:
    assert redactor.redact(SECRET_KEY) == SECRET_KEY
    async with ecosystem(tmp_path, config(llm_server), redactor=redactor):
        assert redactor.redact(f"key={SECRET_KEY}") == f"key={REDACTED}"
    assert llm_server.requests == []


async def test_prompts_are_scrubbed_before_they_reach_the_provider(
    tmp_path: Path, llm_server: ScriptedLLM, redactor: SecretRedactor
) -> None:
    redactor.register(PASTED)
    llm_server.script(Reply(text="noted"))
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": f"my token is {PASTED}, keep it"},
        {
            "role": "assistant",
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "save", "arguments": json.dumps({"t": PASTED})}}
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": f"saved {PASTED}"},
    ]
    async with ecosystem(tmp_path, config(llm_server), redactor=redactor) as eco:
        reply = await eco.chat(messages=messages)
        assert reply.kind is Kind.REPLY, reply
    [sent] = llm_server.requests
    wire = json.dumps(sent.messages)
    assert PASTED not in wire and PASTED.encode().hex() not in wire
    assert sent.messages[1]["content"] == f"my token is {REDACTED}, keep it"
    assert sent.headers["authorization"] == f"Bearer {SECRET_KEY}", "the key itself still authenticates"


async def test_replies_deltas_and_tool_calls_are_scrubbed_before_they_are_published(
    tmp_path: Path, llm_server: ScriptedLLM, redactor: SecretRedactor
) -> None:
    redactor.register(PASTED)
    llm_server.script(Reply(text=f"your key is {PASTED} indeed"), ToolCall(name="save", arguments={"t": PASTED}))
    async with ecosystem(tmp_path, config(llm_server), redactor=redactor) as eco:
        (streamed,) = (await eco.chat(stream=True, in_conversation="red")).data()
        (called,) = (await eco.chat()).data()
        await eco.events.wait_count(LLM_CALL, 2)
        deltas = "".join(d["text"] for d in eco.events.on("stream.red"))  # type: ignore[index]
    assert isinstance(streamed, dict) and isinstance(called, dict)
    assert streamed["content"] == f"your key is {REDACTED} indeed"
    assert PASTED not in deltas and REDACTED in deltas
    assert json.loads(called["tool_calls"][0]["arguments"]) == {"t": REDACTED}


async def test_provider_errors_carry_no_known_secret(
    tmp_path: Path, llm_server: ScriptedLLM, redactor: SecretRedactor
) -> None:
    redactor.register(PASTED)
    llm_server.script(ServerError(status=400, message=f"invalid value {PASTED} in messages"))
    async with ecosystem(tmp_path, config(llm_server), redactor=redactor) as eco:
        reply = await eco.chat()
    assert reply.kind is Kind.ERROR and reply.error is not None
    assert PASTED not in reply.error.message and REDACTED in reply.error.message, reply.error.message
