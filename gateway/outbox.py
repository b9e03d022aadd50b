"""A per-socket outbox: the bus hands frames over without waiting, a pump writes them out.

Deltas are bounded and dropped (with a count) when a slow client lets them pile
up, so one slow browser never stalls the bus; control frames (replies, errors)
are never dropped.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from bus.envelope import Envelope
from bus.topics import StreamDelta
from gateway.redaction import scrub_frame
from mads.core.redaction import SecretRedactor

log = logging.getLogger(__name__)

OUTBOX_DELTAS = 256
"""Deltas buffered per socket before further ones are dropped."""


class Outbox:
    """Frames waiting for one socket: deltas bounded and droppable, control frames always kept."""

    def __init__(self, redactor: SecretRedactor, max_deltas: int = OUTBOX_DELTAS) -> None:
        self.redactor = redactor
        self.max_deltas = max_deltas
        self._frames: collections.deque[tuple[bool, dict[str, Any]]] = collections.deque()
        self._deltas = 0
        self.dropped = 0
        self._ready = asyncio.Event()
        self._empty = asyncio.Event()
        self._empty.set()

    def put(self, frame: dict[str, Any], *, droppable: bool = False) -> None:
        if droppable:
            if self._deltas >= self.max_deltas:
                self.dropped += 1
                return
            self._deltas += 1
        self._frames.append((droppable, frame))
        self._empty.clear()
        self._ready.set()

    async def on_stream(self, envelope: Envelope) -> None:
        """Bus handler: queue each delta without ever waiting."""
        for value in envelope.data():
            try:
                delta = StreamDelta.model_validate(value)
            except ValidationError:
                log.warning("ignoring a malformed stream delta from %s", envelope.sender)
                continue
            self.put({"type": "delta", **delta.model_dump(mode="json")}, droppable=True)

    async def pump(self, ws: web.WebSocketResponse) -> None:
        """Write queued frames to the socket, announcing drops before the next frame."""
        while True:
            await self._ready.wait()
            while self._frames:
                if self.dropped:
                    dropped, self.dropped = self.dropped, 0
                    message = f"{dropped} stream update(s) dropped because the connection was too slow"
                    await ws.send_str(
                        scrub_frame(
                            self.redactor,
                            {"type": "notice", "code": "deltas_dropped", "dropped": dropped, "message": message},
                        )
                    )
                droppable, frame = self._frames.popleft()
                if droppable:
                    self._deltas -= 1
                try:
                    await ws.send_str(scrub_frame(self.redactor, frame))
                except ConnectionError:
                    return
            self._ready.clear()
            self._empty.set()

    async def flushed(self, timeout: float) -> None:
        """Wait (bounded) until every queued frame has been written."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._empty.wait(), timeout)
