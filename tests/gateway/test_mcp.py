"""The MCP door, driven by the official ``mcp`` client (streamable HTTP + ClientSession) against the live gateway."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.exceptions import MCPError

from bus.envelope import Envelope
from bus.topics import TOOL_CALL, ToolCallEvent
from tests.support.ecosystem import Running
from tests.support.llm_server import ScriptedLLM
from tests.support.waiting import eventually


@asynccontextmanager
async def mcp_session(eco: Running, token: str | None = None) -> AsyncIterator[ClientSession]:
    headers = {"Authorization": f"Bearer {token or eco.token}"}
    async with (
        create_mcp_http_client(headers=headers) as http,
        streamable_http_client(eco.at("/mcp"), http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


def leaves(error: BaseException) -> list[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in leaves(inner)]
    return [error]


async def tool_names(eco: Running) -> dict[str, Any]:
    async with mcp_session(eco) as session:
        return {t.name: t for t in (await session.list_tools()).tools}


async def test_a_person_lists_the_tools_they_may_run_with_their_schemas(ecosystem: Running) -> None:
    async with ecosystem.signed_in_as("alice") as alice:
        tools = await tool_names(alice)
    assert {"rogers_create_conversation", "rogers_history", "mcnamara_is_blocked", "grace_list_mads"} <= set(tools)
    assert "mcnamara_record" not in tools, "internal tools are for the ecosystem's components"
    assert "mcnamara_unblock_ip" not in tools, "operator actions are listed for operators only"
    history = tools["rogers_history"]
    assert history.input_schema["type"] == "object"
    assert "conversation_id" in history.input_schema["properties"]
    assert "conversation_id" in history.input_schema["required"]
    assert history.description and history.description.startswith("[rogers]")


async def test_an_operator_also_lists_operator_actions(ecosystem: Running) -> None:
    tools = await tool_names(ecosystem)
    assert "mcnamara_unblock_ip" in tools and "mcnamara_record" not in tools
    assert "operators only" in (tools["mcnamara_unblock_ip"].description or "")


async def test_a_call_runs_as_a_command_for_the_principal_without_an_llm(
    ecosystem: Running, llm_server: ScriptedLLM
) -> None:
    events: list[ToolCallEvent] = []

    async def on_tool_call(envelope: Envelope) -> None:
        events.extend(ToolCallEvent.model_validate(v) for v in envelope.data())

    tap = await ecosystem.host.bus.subscribe(TOOL_CALL, on_tool_call, group="test:mcp-audit")
    try:
        async with ecosystem.signed_in_as("alice") as alice:
            async with mcp_session(alice) as session:
                created = await session.call_tool("rogers_create_conversation", {"title": "from my IDE"})
            assert not created.is_error, created
            conversation = created.structured_content
            assert isinstance(conversation, dict) and conversation["owner"] == "alice"
            status, mine = await alice.get("/api/conversations")
            assert status == 200 and conversation["id"] in [c["id"] for c in mine["conversations"]]
        await eventually(
            lambda: any(
                e.tool == "create_conversation" and e.principal == "user:alice" and e.caller == "user.alice" and e.ok
                for e in events
            )
        )
        assert not any(e.via_llm for e in events)
    finally:
        await tap.cancel()
    assert llm_server.received == []


async def test_bad_arguments_are_a_tool_error_naming_the_fields(ecosystem: Running) -> None:
    async with mcp_session(ecosystem) as session:
        result = await session.call_tool("rogers_history", {"limit": 0})
    assert result.is_error
    error = result.structured_content["error"]  # type: ignore[index]
    assert error["code"] == "invalid_arguments"
    assert {f["field"] for f in error["fields"]} == {"conversation_id", "limit"}
    assert "content.0" not in error["message"]


async def test_an_operator_action_is_refused_to_a_person_and_runs_for_an_operator(ecosystem: Running) -> None:
    async with ecosystem.signed_in_as("alice") as alice, mcp_session(alice) as session:
        refused = await session.call_tool("mcnamara_unblock_ip", {"ip": "192.0.2.7"})
        unknown = await session.call_tool("mcnamara_record", {})
    assert refused.is_error and refused.structured_content["error"]["code"] == "forbidden"  # type: ignore[index]
    assert unknown.is_error and unknown.structured_content["error"]["code"] == "unknown_tool"  # type: ignore[index]
    async with mcp_session(ecosystem) as session:
        done = await session.call_tool("mcnamara_unblock_ip", {"ip": "192.0.2.7"})
    assert not done.is_error and done.structured_content == {"target": "192.0.2.7", "changed": False}


async def test_a_wrong_token_is_refused_before_the_mcp_server(ecosystem: Running) -> None:
    with pytest.raises(BaseExceptionGroup) as caught:  # the client reports the HTTP error from its task groups
        async with mcp_session(ecosystem, token="mad_not-a-real-token"):
            pass
    assert any(isinstance(e, MCPError) for e in leaves(caught.value))
    async with ecosystem.http.post(
        ecosystem.at("/mcp"),
        json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
        headers={"Authorization": "Bearer x"},
    ) as response:
        assert response.status == 401
        assert response.headers["WWW-Authenticate"].startswith("Bearer")


async def test_only_post_reaches_the_stateless_server(ecosystem: Running) -> None:
    for method in ("GET", "DELETE"):
        async with ecosystem.http.request(
            method, ecosystem.at("/mcp"), headers={"Accept": "text/event-stream"}
        ) as response:
            assert response.status == 405, method
            assert response.headers["Allow"] == "POST"
