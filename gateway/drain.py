"""Graceful shutdown of HTTP work: count in-flight requests, let them finish, then cut them off.

On stop the gateway refuses new requests, waits up to the drain timeout for the ones
in flight, and only then aborts the rest, which answer 503 ``shutting_down`` instead of
dropping the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Iterator
from typing import TypeVar

from aiohttp import web

from gateway.errors import ApiError, Handler

T = TypeVar("T")
DRAIN_KEY = web.AppKey("drain", "Drain")


class Drain:
    """Tracks in-flight requests; :meth:`race` lets a waiting handler give up when aborted."""

    def __init__(self) -> None:
        self.closing = False
        self.active = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._abort = asyncio.Event()

    @contextlib.contextmanager
    def track(self) -> Iterator[None]:
        self.active += 1
        self._idle.clear()
        try:
            yield
        finally:
            self.active -= 1
            if self.active == 0:
                self._idle.set()

    async def race(self, awaitable: Awaitable[T]) -> T:
        """Await ``awaitable`` unless the drain is aborted first (then 503)."""
        task = asyncio.ensure_future(awaitable)
        abort = asyncio.ensure_future(self._abort.wait())
        try:
            await asyncio.wait({task, abort}, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            task.cancel()  # the client went away (handler cancelled): stop what it was waiting for
            raise
        finally:
            abort.cancel()
        if task.done():
            return task.result()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        raise ApiError(503, "shutting_down", "the ecosystem is shutting down; try again when it is back")

    async def close(self, timeout: float) -> bool:
        """Refuse new work, wait for in-flight work; abort what is left. True if all finished."""
        self.closing = True
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
            return True
        except TimeoutError:
            self._abort.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), 5.0)
            return False


def is_websocket(request: web.Request) -> bool:
    return request.headers.get("Upgrade", "").lower() == "websocket"


@web.middleware
async def drain_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    drain = request.app[DRAIN_KEY]
    if drain.closing:
        raise ApiError(503, "shutting_down", "the ecosystem is shutting down; try again when it is back")
    if is_websocket(request):
        return await handler(request)
    with drain.track():
        return await handler(request)
