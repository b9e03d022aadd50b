"""The MAD directory: who is up, where, with which tools — learned from presence events.

Every running MAD announces its card on ``events.presence`` when it starts, every
``HEARTBEAT`` seconds while it runs, and when it stops. A :class:`Directory`
listens and forgets a MAD whose heartbeat is older than ``EXPIRY``. The same code
works on the in-memory bus and across processes on Redis, so the gateway sees
remote MADs exactly like local ones, and a request to a MAD that is down fails
at once with a clear error instead of waiting for its deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any, Literal

from pydantic import Field

from bus.base import Bus, BusClosed, Subscription
from bus.envelope import DataPart, Envelope, Kind, Strict
from mads.core import names
from mads.core.handle import MadBus

PRESENCE = "events.presence"
PRESENCE_QUERY = "events.presence_query"
PRESENCE_LISTENER = "events.presenc[e]"
"""Matches exactly ``events.presence``, written as a glob on purpose: a glob subscription
without a group gets a private group on every transport, so each Directory (one per
host, one in Grace, in every process) sees every announcement, and on Redis its group
is destroyed when it stops or its process dies instead of pinning the stream."""
HEARTBEAT = 5.0
EXPIRY = 15.0


class PresenceAnnouncement(Strict):
    mad: str
    address: str
    status: Literal["up", "down"]
    process: str
    card: dict[str, Any] = Field(default_factory=dict)


class DirectoryEntry(Strict):
    mad: str
    address: str
    process: str
    alive: bool
    last_seen_s_ago: float
    card: dict[str, Any]


class PresenceAnnouncer:
    """Announces one MAD: at start, on a heartbeat, on queries, and at stop."""

    def __init__(self, bus: Bus, address: str, name: str, card: dict[str, Any], process: str) -> None:
        self.bus = bus
        self.announcement = PresenceAnnouncement(mad=name, address=address, status="up", process=process, card=card)
        self._task: asyncio.Task[None] | None = None
        self._query_sub: Subscription | None = None

    async def start(self) -> None:
        await self._announce("up")
        self._query_sub = await self.bus.subscribe(PRESENCE_QUERY, self._on_query, group=f"presence:{self.address}")
        self._task = asyncio.create_task(self._beat(), name=f"presence:{self.address}")

    @property
    def address(self) -> str:
        return self.announcement.address

    async def _on_query(self, envelope: Envelope) -> None:
        await self._announce("up")

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT)
            with contextlib.suppress(BusClosed):
                await self._announce("up")

    async def _announce(self, status: Literal["up", "down"]) -> None:
        value = self.announcement.model_copy(update={"status": status}).model_dump(mode="json")
        await self.bus.publish(
            Envelope(sender=self.address, recipient=PRESENCE, kind=Kind.EVENT, content=[DataPart(value=value)])
        )

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._query_sub is not None:
            await self._query_sub.cancel()
        with contextlib.suppress(BusClosed):
            await self._announce("down")


class Directory:
    """Keeps the latest card of every MAD it hears about; expires silent ones."""

    def __init__(self, bus: Bus | MadBus, *, expiry: float = EXPIRY, sender: str = names.DIRECTORY) -> None:
        self.bus = bus
        self.sender = sender
        """Who asks for presence (the host's directory, or a MAD's own, as that MAD)."""
        self.expiry = expiry
        self._entries: dict[str, tuple[PresenceAnnouncement, float]] = {}
        self._sub: Subscription | None = None
        self._changed = asyncio.Event()

    async def start(self) -> None:
        self._sub = await self.bus.subscribe(PRESENCE_LISTENER, self._on_presence)
        await self.bus.publish(
            Envelope(sender=self.sender, recipient=PRESENCE_QUERY, kind=Kind.EVENT, content=[DataPart(value={})])
        )

    async def stop(self) -> None:
        if self._sub is not None:
            await self._sub.cancel()

    async def _on_presence(self, envelope: Envelope) -> None:
        for value in envelope.data():
            announcement = PresenceAnnouncement.model_validate(value)
            if announcement.status == "down":
                self._entries.pop(announcement.address, None)
            else:
                self._entries[announcement.address] = (announcement, time.monotonic())
        self._changed.set()

    def entries(self) -> list[DirectoryEntry]:
        now = time.monotonic()
        return [
            DirectoryEntry(
                mad=a.mad,
                address=a.address,
                process=a.process,
                alive=now - seen <= self.expiry,
                last_seen_s_ago=round(now - seen, 3),
                card=a.card,
            )
            for a, seen in sorted(self._entries.values(), key=lambda item: item[0].address)
        ]

    def is_alive(self, address: str) -> bool:
        found = self._entries.get(address)
        return found is not None and time.monotonic() - found[1] <= self.expiry

    def card(self, address: str) -> dict[str, Any] | None:
        found = self._entries.get(address)
        return found[0].card if found else None

    async def wait_for(self, addresses: set[str], timeout: float) -> None:
        """Wait until every address has announced itself (start-up ordering, tests)."""
        async with asyncio.timeout(timeout):
            while not addresses <= {a for a in self._entries if self.is_alive(a)}:
                self._changed.clear()
                await self._changed.wait()
