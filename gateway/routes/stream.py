"""The conversation socket: streamed deltas out, posted messages in, one WebSocket per page.

The server subscribes to ``stream.<conversation_id>`` for as long as the socket is
open and forwards each :class:`~bus.topics.StreamDelta` as a JSON frame, in order.
The bus handler never waits on the network: frames go into a bounded per-socket
outbox, and when a slow client lets it fill, further deltas are dropped and the
client is told how many (replies and errors are never dropped; the final reply
carries the whole text anyway).

Frames from the server: ``ready``, ``delta`` (StreamDelta fields), ``notice``,
``reply`` (the same body as POST …/messages), ``error`` (``status`` + error body).
Frames from the client: ``{"type": "message", "text": "...", "client_id"?: "...", "idempotency_key"?: "..."}``
(the same key on a retry never stores the message twice, as the ``Idempotency-Key`` header).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from aiohttp import WSMsgType, web
from pydantic import ValidationError

from bus.envelope import ErrorInfo, FieldError, Principal, field_errors
from bus.ids import new_id
from bus.topics import stream_topic
from gateway.errors import ApiError, error_body
from gateway.json_input import JsonInputError, decode_json
from gateway.outbox import Outbox
from gateway.principal import identity_of, principal_of
from gateway.redaction import REDACTOR_KEY
from gateway.schemas import MessageFrame, conversation_id
from gateway.socket_watch import WATCH_KEY
from gateway.state import GatewayState, state_of

log = logging.getLogger(__name__)
routes = web.RouteTableDef()

MAX_POSTS_IN_FLIGHT = 4
HEARTBEAT = 30.0


def error_frame(status: int, info: ErrorInfo, client_id: str | None = None) -> dict[str, Any]:
    return {"type": "error", "status": status, "client_id": client_id, **error_body(info)}


class Session:
    """One open socket: reads frames, posts messages through Grace, forwards replies."""

    def __init__(self, state: GatewayState, conversation: str, principal: Principal, outbox: Outbox) -> None:
        self.state = state
        self.conversation = conversation
        self.principal = principal
        self.outbox = outbox
        self.posts: set[asyncio.Task[None]] = set()

    def on_text(self, raw: str) -> None:
        try:
            value = decode_json(raw)
        except JsonInputError as exc:
            reason = exc.reason
            info = ErrorInfo(
                code="malformed_json", message=f"frame: {reason}", fields=[FieldError(field="frame", reason=reason)]
            )
            self.outbox.put(error_frame(400, info))
            return
        try:
            frame = MessageFrame.model_validate(value)
        except ValidationError as exc:
            fields = field_errors(exc, "frame")
            summary = "; ".join(f"{f.field}: {f.reason}" for f in fields[:5])
            info = ErrorInfo(code="invalid_frame", message=f"validation failed: {summary}", fields=fields)
            client_id = (
                value.get("client_id") if isinstance(value, dict) and isinstance(value.get("client_id"), str) else None
            )
            self.outbox.put(error_frame(422, info, client_id))
            return
        if self.state.drain.closing:
            info = ErrorInfo(code="shutting_down", message="the ecosystem is shutting down; try again when it is back")
            self.outbox.put(error_frame(503, info, frame.client_id))
            return
        if len(self.posts) >= MAX_POSTS_IN_FLIGHT:
            message = f"at most {MAX_POSTS_IN_FLIGHT} messages may wait for a reply on one connection"
            self.outbox.put(error_frame(429, ErrorInfo(code="too_many_in_flight", message=message), frame.client_id))
            return
        task = asyncio.create_task(self._post(frame))
        self.posts.add(task)
        task.add_done_callback(self.posts.discard)

    async def _post(self, frame: MessageFrame) -> None:
        with self.state.drain.track():
            try:
                result = await self.state.client.send_message(
                    self.conversation, frame.text, principal=self.principal, idempotency_key=frame.idempotency_key
                )
            except ApiError as exc:
                self.outbox.put(error_frame(exc.status, exc.info, frame.client_id))
                return
            except Exception:
                log.exception("posting over the socket failed")
                self.outbox.put(
                    error_frame(500, ErrorInfo(code="internal_error", message="internal error"), frame.client_id)
                )
                return
        self.outbox.put({"type": "reply", "client_id": frame.client_id, **result.model_dump(mode="json")})

    async def close(self) -> None:
        for task in list(self.posts):
            task.cancel()
        for task in list(self.posts):
            with contextlib.suppress(asyncio.CancelledError):
                await task


@routes.get("/api/conversations/{conversation_id}/stream")
async def stream(request: web.Request) -> web.StreamResponse:
    state = state_of(request)
    cid = conversation_id(request)
    principal = principal_of(request)
    identity = identity_of(request)
    watch = request.app[WATCH_KEY]
    ws = web.WebSocketResponse(heartbeat=HEARTBEAT, max_msg_size=state.settings.gateway.max_body_bytes)
    if not ws.can_prepare(request).ok:
        raise ApiError(
            426, "websocket_required", "this endpoint speaks WebSocket only; open it with a WebSocket client"
        )
    await state.client.conversation(cid, principal=principal)
    outbox = Outbox(request.app[REDACTOR_KEY])
    subscription = await state.bus.subscribe(stream_topic(cid), outbox.on_stream, group=f"ws:{id(ws)}", concurrency=1)
    session = Session(state, cid, principal, outbox)
    pump: asyncio.Task[None] | None = None
    try:
        await ws.prepare(request)
        state.sockets[ws] = outbox
        watch.add(ws, identity, outbox)
        outbox.put({"type": "ready", "conversation_id": cid})
        pump = asyncio.create_task(outbox.pump(ws))
        async for message in ws:
            if message.type is WSMsgType.TEXT:
                if not await watch.still_allowed(identity):
                    watch.refuse(ws, "the credentials this connection was opened with are no longer valid")
                    continue
                try:
                    session.on_text(message.data)
                except Exception:  # a bug must cost one error frame, not the socket
                    reference = new_id()
                    log.exception("unhandled error on a stream frame (reference %s)", reference)
                    info = ErrorInfo(code="internal_error", message=f"internal error (reference {reference})")
                    outbox.put(error_frame(500, info))
            elif message.type is WSMsgType.BINARY:
                info = ErrorInfo(code="unsupported_frame", message="send JSON text frames, not binary")
                outbox.put(error_frame(415, info))
    finally:
        state.sockets.pop(ws, None)
        watch.remove(ws)
        await subscription.cancel()
        await session.close()
        if pump is not None:
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await pump
    return ws
