"""``/mcp``: the MCP Streamable HTTP endpoint, an aiohttp route in front of the ``mcp`` package's ASGI app.

The request has passed the gateway's guard (bearer token or session, rate limits, CSRF)
before it gets here; the route hands the authenticated principal to the MCP handlers in
the ASGI scope and turns the ASGI response back into an aiohttp one, so the redaction
filter and the security headers apply to it like to every other response. The server
answers with JSON (no long-lived streams), so the response is collected whole. Only POST
is routed: a stateless server has no stream to offer on GET and no session to end on DELETE.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from gateway.mcp_door import McpDoor
from gateway.mcp_tools import IDENTITY_SCOPE_KEY
from gateway.principal import principal_of
from gateway.schemas import read_raw

routes = web.RouteTableDef()

MCP_DOOR_KEY = web.AppKey("mcp_door", McpDoor)
MCP_PATH = "/mcp"


def asgi_scope(request: web.Request) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": f"{request.version.major}.{request.version.minor}",
        "method": request.method,
        "scheme": request.scheme,
        "path": request.path,
        "raw_path": request.raw_path.split("?", 1)[0].encode(),
        "query_string": request.query_string.encode(),
        "root_path": "",
        "headers": [(name.lower(), value) for name, value in request.raw_headers],
        "client": (request.remote or "", 0),
        "server": (request.url.host or "", request.url.port or 80),
        IDENTITY_SCOPE_KEY: principal_of(request),
    }


async def call_asgi(app: Any, request: web.Request) -> web.Response:
    """Run one request through an ASGI app that answers with a complete body."""
    body = await read_raw(request)
    delivered = False
    finished = asyncio.Event()
    status = 500
    headers: list[tuple[str, str]] = []
    chunks: list[bytes] = []

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        await finished.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = int(message["status"])
            headers.extend((k.decode("latin-1"), v.decode("latin-1")) for k, v in message.get("headers", []))
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                finished.set()

    try:
        await app(asgi_scope(request), receive, send)
    finally:
        finished.set()
    response = web.Response(status=status, body=b"".join(chunks))
    for name, value in headers:
        if name.lower() not in ("content-length", "transfer-encoding", "connection"):
            response.headers.add(name, value)
    return response


@routes.post(MCP_PATH)
async def mcp_endpoint(request: web.Request) -> web.StreamResponse:
    """JSON-RPC messages in, JSON out. Only POST: the server is stateless and never opens a stream of its own,
    so GET (a server-to-client stream) and DELETE (end a session) are 405 with ``Allow: POST``, as MCP allows."""
    door = request.app[MCP_DOOR_KEY]
    return await call_asgi(door, request)
