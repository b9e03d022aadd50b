"""Open stream sockets and the credentials they were opened with: a socket lives no longer than those.

A socket is authenticated once, at the upgrade. Revoking its token (the CLI, from
another process, writes ``auth.db``), signing out, or the session expiring must still
end it: :class:`SocketWatch` re-checks every open socket's token and session every
``interval`` seconds (and the stream handler re-checks before each message it accepts),
and closes the ones whose credentials ended with an ``error`` frame (401
``unauthorized``) then close code 1008 (policy violation). Signing out closes the
session's sockets at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

from aiohttp import WSCloseCode, web

from bus.envelope import ErrorInfo
from gateway.auth.context import AuthContext
from gateway.auth.sessions import Session
from gateway.auth.store import TokenRejected
from gateway.errors import error_body
from gateway.outbox import Outbox
from gateway.principal import Identity

log = logging.getLogger(__name__)

CHECK_INTERVAL = 0.5
"""Seconds between sweeps: a revoked token's sockets close within about this long."""
FLUSH_BEFORE_CLOSE = 1.0


@dataclass
class Watched:
    identity: Identity
    outbox: Outbox


class SocketWatch:
    def __init__(self, auth: AuthContext, interval: float = CHECK_INTERVAL) -> None:
        self.auth = auth
        self.interval = interval
        self._sockets: dict[web.WebSocketResponse, Watched] = {}
        self._closing: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None

    def add(self, ws: web.WebSocketResponse, identity: Identity, outbox: Outbox) -> None:
        self._sockets[ws] = Watched(identity, outbox)

    def remove(self, ws: web.WebSocketResponse) -> None:
        self._sockets.pop(ws, None)

    async def still_allowed(self, identity: Identity) -> bool:
        """Whether the credentials a socket was opened with still hold (a session in use is kept alive)."""
        if identity.session is not None and not self.auth.sessions.touch(identity.session):
            return False
        try:
            await self.auth.store.still_valid(identity.token_id)
        except TokenRejected:
            return False
        return True

    def session_ended(self, session: Session) -> None:
        """Sign-out: close the session's sockets now."""
        for ws, watched in list(self._sockets.items()):
            if watched.identity.session is session:
                self.refuse(ws, "the session ended")

    def refuse(self, ws: web.WebSocketResponse, why: str) -> None:
        """Tell the client why, then close the socket (in the background: the caller never waits on the network)."""
        watched = self._sockets.pop(ws, None)
        if watched is None:
            return
        task = asyncio.create_task(self._close(ws, watched.outbox, why))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _close(self, ws: web.WebSocketResponse, outbox: Outbox, why: str) -> None:
        message = f"{why}: sign in again"
        outbox.put({"type": "error", "status": 401, "client_id": None, **error_body(unauthorized(message))})
        await outbox.flushed(FLUSH_BEFORE_CLOSE)
        with contextlib.suppress(ConnectionError):
            await ws.close(code=WSCloseCode.POLICY_VIOLATION, message=b"credentials no longer valid")

    async def sweep(self) -> None:
        """Close every socket whose token was revoked or expired, or whose session ended."""
        verdicts: dict[str, bool] = {}
        for ws, watched in list(self._sockets.items()):
            identity = watched.identity
            if identity.session is not None and not self.auth.sessions.alive(identity.session):
                self.refuse(ws, "the session ended")
                continue
            if identity.token_id not in verdicts:
                try:
                    await self.auth.store.still_valid(identity.token_id)
                    verdicts[identity.token_id] = True
                except TokenRejected:
                    verdicts[identity.token_id] = False
            if not verdicts[identity.token_id]:
                self.refuse(ws, "the token this connection was opened with was revoked or expired")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.sweep()
            except Exception:
                log.exception("checking open sockets' credentials failed; trying again")

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for closing in list(self._closing):
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await closing


def unauthorized(message: str) -> ErrorInfo:
    return ErrorInfo(code="unauthorized", message=message)


WATCH_KEY = web.AppKey("socket_watch", SocketWatch)
