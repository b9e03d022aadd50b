"""The ``mcp`` package's server for the MCP door: ``tools/list`` and ``tools/call`` for one principal.

``tools/call`` runs the tool as a command for the principal through the same
:class:`~gateway.mad_client.MadClient` as the JSON API: no LLM, no tokens; the MAD
validates the arguments, enforces authority and publishes the tool-call audit event; the
gateway's guard has already authenticated and rate-limited the HTTP request. A tool's
failure is a result with ``isError`` (its code, message and fields as structured
content), as MCP asks, so a client's model can read and correct it.
"""

from __future__ import annotations

import json
from typing import Any

import mcp_types as types
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from pydantic import JsonValue

from bus.envelope import Principal
from gateway.errors import ApiError
from gateway.mcp_tools import IDENTITY_SCOPE_KEY, tools_for
from gateway.state import GatewayState

SERVER_NAME = "mad-ecosystem"
INSTRUCTIONS = (
    "The tools of the mad-ecosystem's MADs (Modular Agent Designs), named <mad>_<tool>. Each runs as a command on "
    "behalf of the token's owner: no LLM is involved. To talk to a MAD instead, use the OpenAI-compatible API at /v1."
)


def _principal(ctx: ServerRequestContext[Any]) -> Principal:
    scope = getattr(ctx.request, "scope", None)
    principal = scope.get(IDENTITY_SCOPE_KEY) if isinstance(scope, dict) else None
    if not isinstance(principal, Principal):
        # Only reachable if the endpoint were mounted without the guard: refuse rather than run as nobody.
        raise PermissionError("no authenticated principal on this MCP request")
    return principal


def _result(value: JsonValue, *, is_error: bool = False) -> types.CallToolResult:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, indent=2, default=str)
    structured = value if isinstance(value, dict) else {"result": value}
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=text)], structured_content=structured, is_error=is_error
    )


def _error(code: str, message: str) -> types.CallToolResult:
    return _result({"error": {"code": code, "message": message, "fields": [], "retryable": False}}, is_error=True)


COMMAND_FIELD_PREFIX = "content.0.arguments."
"""How a MAD names a field of a command's arguments; over MCP the arguments are the tool's own."""


def _as_tool_error(exc: ApiError) -> dict[str, JsonValue]:
    info = exc.info.model_dump(mode="json")
    info["message"] = str(info["message"]).replace(COMMAND_FIELD_PREFIX, "")
    for field in info["fields"]:
        field["field"] = str(field["field"]).removeprefix(COMMAND_FIELD_PREFIX)
    return info


def build_server(state: GatewayState) -> Server[Any]:
    async def list_tools(
        ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        tools = tools_for(state, _principal(ctx)).values()
        return types.ListToolsResult(
            tools=[types.Tool(name=t.name, description=t.description, input_schema=t.input_schema) for t in tools]
        )

    async def call_tool(ctx: ServerRequestContext[Any], params: types.CallToolRequestParams) -> types.CallToolResult:
        principal = _principal(ctx)
        tool = tools_for(state, principal).get(params.name)
        if tool is None:
            if params.name in tools_for(state, Principal(kind="operator", name=principal.name)):
                return _error("forbidden", f"{params.name} is an operator action; {principal} may not run it")
            return _error("unknown_tool", f"no tool {params.name!r} (tools/list shows the tools you may run)")
        try:
            value = await state.client.call(tool.mad, tool.tool, dict(params.arguments or {}), principal=principal)
        except ApiError as exc:
            return _result({"error": _as_tool_error(exc)}, is_error=True)
        return _result(value)

    return Server(SERVER_NAME, instructions=INSTRUCTIONS, on_list_tools=list_tools, on_call_tool=call_tool)


def build_manager(state: GatewayState) -> StreamableHTTPSessionManager:
    """Stateless, JSON responses: every request stands alone with its own credentials."""
    return StreamableHTTPSessionManager(build_server(state), stateless=True, json_response=True)
