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
PRESENCE_QUERY_LISTENER = "events.presence_quer[y]"
"""Matches exactly ``events.presence_query``, as a glob for the same reason: every instance of a
MAD (two processes hosting it) answers every query, not one instance per MAD."""
HEARTBEAT = 5.0
EXPIRY = 15.0


class PresenceAnnouncement(Strict):
    mad: str
    address: str
    status: Literal["up", "down"]
    process: str
    card: dict[str, Any] = Field(default_factory=dict)
    instance: str = ""
    """New each time the MAD starts (a reload included): the same instance means the MAD was not restarted."""


class DirectoryEntry(Strict):
    mad: str
    address: str
    process: str
    alive: bool
    last_seen_s_ago: float
    card: dict[str, Any]
    instance: str = ""


class PresenceAnnouncer:
    """Announces one MAD: at start, on a heartbeat, on queries, and at stop."""

    def __init__(
        self,
        bus: Bus,
        address: str,
        name: str,
        card: dict[str, Any],
        process: str,
        *,
        heartbeat: float = HEARTBEAT,
        instance: str = "",
    ) -> None:
        self.bus = bus
        self.heartbeat = heartbeat
        self.announcement = PresenceAnnouncement(
            mad=name, address=address, status="up", process=process, card=card, instance=instance
        )
        self._task: asyncio.Task[None] | None = None
        self._query_sub: Subscription | None = None

    async def start(self) -> None:
        await self._announce("up")
        self._query_sub = await self.bus.subscribe(PRESENCE_QUERY_LISTENER, self._on_query)
        self._task = asyncio.create_task(self._beat(), name=f"presence:{self.address}")

    @property
    def address(self) -> str:
        return self.announcement.address

    async def _on_query(self, envelope: Envelope) -> None:
        await self._announce("up")

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat)
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
    """Keeps the latest card of every instance of every MAD it hears about; expires silent ones.

    An instance is one (address, process) pair: two processes hosting the same MAD are two
    entries, each with its own process and heartbeat, in a stable order. An instance silent
    for ``expiry`` is shown ``alive: false`` while no instance of its MAD is alive (the MAD
    is down); once another instance of that MAD announces itself, the silent ones are dropped.
    """

    def __init__(self, bus: Bus | MadBus, *, expiry: float = EXPIRY, sender: str = names.DIRECTORY) -> None:
        self.bus = bus
        self.sender = sender
        """Who asks for presence (the host's directory, or a MAD's own, as that MAD)."""
        self.expiry = expiry
        self._entries: dict[tuple[str, str], tuple[PresenceAnnouncement, float]] = {}
        """(address, process) → the instance's last announcement and when it was heard (monotonic)."""
        self.version = 0
        """Bumped on every announcement taken in: with :meth:`alive_now`, what a view of the entries depends on."""
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
            key = (announcement.address, announcement.process)
            if announcement.status == "down":
                self._entries.pop(key, None)
                self.version += 1
                continue
            now = time.monotonic()
            for other in [k for k in self._instances(announcement.address) if k != key]:
                if now - self._entries[other][1] > self.expiry:
                    del self._entries[other]  # silent (crashed) while this instance serves the MAD
            self._entries[key] = (announcement, now)
            self.version += 1
        self._changed.set()

    def alive_now(self) -> tuple[bool, ...]:
        """Which instances are alive now, in :meth:`entries` order (cheap: no records are built)."""
        now = time.monotonic()
        return tuple(now - seen <= self.expiry for _, (_, seen) in sorted(self._entries.items()))

    def _instances(self, address: str) -> list[tuple[str, str]]:
        return [key for key in self._entries if key[0] == address]

    def entries(self) -> list[DirectoryEntry]:
        """Every instance of every MAD, by address then process."""
        return [self._entry(a, seen) for _, (a, seen) in sorted(self._entries.items())]

    def latest(self) -> list[DirectoryEntry]:
        """One entry per address: its most recently heard instance (alive if any instance is)."""
        return [self._entry(*self._latest(address)) for address in sorted({k[0] for k in self._entries})]

    def _latest(self, address: str) -> tuple[PresenceAnnouncement, float]:
        return max((self._entries[k] for k in self._instances(address)), key=lambda found: found[1])

    def _entry(self, a: PresenceAnnouncement, seen: float) -> DirectoryEntry:
        now = time.monotonic()
        return DirectoryEntry(
            mad=a.mad,
            address=a.address,
            process=a.process,
            alive=now - seen <= self.expiry,
            last_seen_s_ago=round(now - seen, 3),
            card=a.card,
            instance=a.instance,
        )

    def is_alive(self, address: str) -> bool:
        """Some instance of ``address`` was heard within ``expiry``."""
        now = time.monotonic()
        return any(now - self._entries[k][1] <= self.expiry for k in self._instances(address))

    def card(self, address: str) -> dict[str, Any] | None:
        """The card of the instance of ``address`` heard last (instances of one MAD run the same code)."""
        return self._latest(address)[0].card if self._instances(address) else None

    async def wait_for(self, addresses: set[str], timeout: float) -> None:
        """Wait until every address has announced itself (start-up ordering, tests)."""
        async with asyncio.timeout(timeout):
            while not all(self.is_alive(a) for a in addresses):
                self._changed.clear()
                await self._changed.wait()
