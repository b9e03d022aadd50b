"""The MCP door: the MADs' tools served to MCP clients by the ``mcp`` package's server.

``tools/list`` lists, for the calling principal, every tool of every running MAD they
may run by command: never a tool marked internal (for the ecosystem's own components),
operator actions only for operators. Each tool is named ``<mad>_<tool>`` (a name every
MCP client accepts) and carries its MAD's JSON Schema. ``tools/call`` runs the tool as a
command for that principal through the same :class:`~gateway.mad_client.MadClient` as
the JSON API (see :mod:`gateway.mcp_server`).

The ``mcp`` package takes seconds to import, so the server is built on the first request
to ``/mcp``, not when the gateway starts. It runs stateless with JSON responses, so each
HTTP request carries its own credentials and nothing of one principal's session can be
reached by another's request. The principal travels to the handlers in the ASGI scope
(:data:`IDENTITY_SCOPE_KEY`).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from gateway.errors import ApiError
from gateway.state import GatewayState

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class McpDoor:
    """The MCP server's Streamable HTTP session manager, and the task that keeps it running."""

    def __init__(self, state: GatewayState) -> None:
        self.state = state
        self._handle: Callable[[Scope, Receive, Send], Awaitable[None]] | None = None
        self._running: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._starting = asyncio.Lock()

    async def start(self) -> None:
        """Build the server and run its session manager (once; later calls return at once)."""
        async with self._starting:
            if self._handle is None and not self._stopping.is_set():
                await self._start()

    async def _start(self) -> None:
        # Imported in a thread: seconds of import must not stall the event loop.
        server = await asyncio.to_thread(importlib.import_module, "gateway.mcp_server")
        manager = server.build_manager(self.state)
        ready = asyncio.Event()

        async def run() -> None:
            async with manager.run():
                ready.set()
                await self._stopping.wait()

        self._running = asyncio.create_task(run(), name="gateway:mcp")
        waiter = asyncio.create_task(ready.wait())
        await asyncio.wait({waiter, self._running}, return_when=asyncio.FIRST_COMPLETED)
        if not ready.is_set():
            waiter.cancel()
            await self._running  # raises what failed
        self._handle = manager.handle_request

    async def stop(self) -> None:
        self._stopping.set()
        running, self._running = self._running, None
        self._handle = None
        if running is None:
            return
        with contextlib.suppress(asyncio.CancelledError):
            await running

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The ASGI app of the endpoint (only while the gateway runs)."""
        await self.start()
        if self._handle is None:
            raise ApiError(503, "shutting_down", "the ecosystem is shutting down; try again when it is back")
        await self._handle(scope, receive, send)
