"""A wiretap on Redis: a consumer group on ``{prefix}:tap``, which every publish also writes.

The default group is private to one ``wiretap()`` call and starts at the moment of
the call, so each observer sees every envelope published afterwards, once, in
publication order. A named group (``wiretap(observer, group="rogers")``) is shared:
several instances split the tap between them and a restarted one resumes where its
group stopped, so one deployment's Rogers sees everything once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from redis.exceptions import ResponseError

from bus.base import Observer, Subscription, SubscriptionSpec
from bus.envelope import Envelope
from bus.redis.backoff import TRANSIENT, Backoff, is_nogroup
from bus.redis.consumer import Entry, decode_entry

if TYPE_CHECKING:
    from bus.redis.bus import RedisBus

log = logging.getLogger(__name__)

BATCH = 128


async def _never(envelope: Envelope) -> None:
    return None


class RedisTap(Subscription):
    """Feeds every tapped envelope to ``observer``, one at a time, acknowledging each batch after it."""

    def __init__(self, bus: RedisBus, observer: Observer, uid: str, group: str, ephemeral: bool) -> None:
        self.bus = bus
        self.observer = observer
        self.uid = uid
        self.ephemeral = ephemeral
        self.spec = SubscriptionSpec(pattern="*", handler=_never, group=group)
        self.stream = bus.keys.tap
        self.task: asyncio.Task[None] | None = None
        self.cancelled = False

    def registration(self, start: str) -> list[str | int]:
        grace = 0 if self.ephemeral else int(self.bus.settings.orphan_grace * 1000)
        return [self.bus.keys.taps, self.uid, self.stream, self.spec.group, start, grace]

    def start(self) -> None:
        self.task = asyncio.create_task(self._loop(), name="bus:wiretap")

    async def _loop(self) -> None:
        bus = self.bus
        backoff = Backoff(bus.settings.backoff_max)
        block_ms = int(bus.settings.block * 1000)
        idle_ms = int(bus.settings.reclaim_idle * 1000)
        loop = asyncio.get_running_loop()
        next_reclaim = loop.time() + bus.settings.reclaim_idle / 2
        while True:
            try:
                if not self.ephemeral and loop.time() >= next_reclaim:
                    next_reclaim = loop.time() + bus.settings.reclaim_idle / 2
                    _, claimed, *_ = await bus.redis.xautoclaim(
                        self.stream, self.spec.group, self.uid, idle_ms, "0-0", count=BATCH
                    )
                    await self._observe(claimed)
                response = await bus.redis.xreadgroup(
                    self.spec.group, self.uid, {self.stream: ">"}, count=BATCH, block=block_ms
                )
                for _stream, entries in response or []:
                    await self._observe(entries)
            except ResponseError as exc:
                if not is_nogroup(exc):
                    log.warning("reading the wiretap failed: %s", exc)
                await backoff.wait()
                bus.wake_heartbeat()
                continue
            except TRANSIENT:
                bus.connection_lost()
                await backoff.wait()
                continue
            backoff.reset()

    async def _observe(self, entries: list[Entry]) -> None:
        if not entries:
            return
        for _raw_id, fields in entries:
            envelope, reason, _ = decode_entry(fields)
            if envelope is None:
                log.warning("wiretap skipped an invalid entry: %s", reason)
                continue
            try:
                await self.observer(envelope)
            except Exception:
                log.exception("wiretap observer failed on %s", envelope.id)
        await self.bus.redis.xack(self.stream, self.spec.group, *(raw_id for raw_id, _ in entries))

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task

    def abort(self) -> None:
        if self.task is not None:
            self.task.cancel()

    async def cancel(self) -> None:
        if self.cancelled:
            return
        self.cancelled = True
        await self.bus.unregister_tap(self)
