"""A wiretap on Redis: a consumer group on ``{prefix}:tap``, which every publish also writes.

The default group is private to one ``wiretap()`` call and starts at the moment of
the call, so each observer sees every envelope published afterwards, once, in
publication order. A named group (``wiretap_batches(observer, group="rogers")``) is
shared: several instances split the tap between them and a restarted one resumes
where its group stopped, so one deployment's Rogers sees everything once.

A batch is acknowledged only after the observer returned. While it runs, the
bus's heartbeat renews its entries (so no other tap of the group reclaims live
work); if the process dies or the observer raises, they stay pending and a tap of
the group reclaims them once idle for ``reclaim_idle``; after ``max_deliveries`` they
are dead-lettered, as on any other stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from redis.exceptions import ResponseError

from bus.base import BatchObserver, Subscription, SubscriptionSpec
from bus.envelope import Envelope
from bus.redis.backoff import TRANSIENT, Backoff, is_nogroup
from bus.redis.consumer import Entry, decode_entry

if TYPE_CHECKING:
    from bus.redis.bus import RedisBus

log = logging.getLogger(__name__)


async def _never(envelope: Envelope) -> None:
    return None


class RedisTap(Subscription):
    """Feeds tapped envelopes to ``observer`` up to ``batch`` at a time, acknowledging each batch after it."""

    def __init__(
        self, bus: RedisBus, observer: BatchObserver, uid: str, group: str, ephemeral: bool, batch: int
    ) -> None:
        self.bus = bus
        self.observer = observer
        self.uid = uid
        self.ephemeral = ephemeral
        self.batch = batch
        self.spec = SubscriptionSpec(pattern="*", handler=_never, group=group)
        self.stream = bus.keys.tap
        self.task: asyncio.Task[None] | None = None
        self.inflight: list[bytes] = []
        """Entry ids handed to the observer and not yet acknowledged (their leases are renewed)."""
        self._settled = asyncio.Event()
        self._settled.set()
        self.stopping = False
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
        loop = asyncio.get_running_loop()
        next_reclaim = loop.time() + bus.settings.reclaim_idle / 2
        while not self.stopping:
            try:
                if loop.time() >= next_reclaim:
                    next_reclaim = loop.time() + bus.settings.reclaim_idle / 2
                    await self.reclaim_once()
                response = await bus.redis.xreadgroup(
                    self.spec.group, self.uid, {self.stream: ">"}, count=self.batch, block=block_ms
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

    async def reclaim_once(self) -> None:
        """Take over tap entries left unacknowledged (a dead process, a failed observer); dead-letter repeats."""
        bus, group = self.bus, self.spec.group
        idle_ms = int(bus.settings.reclaim_idle * 1000)
        pending = await bus.redis.xpending_range(self.stream, group, min="-", max="+", count=self.batch, idle=idle_ms)
        retry: list[bytes] = []
        dead: dict[bytes, int] = {}
        for item in pending:
            if item["times_delivered"] >= bus.settings.max_deliveries:
                dead[item["message_id"]] = item["times_delivered"]
            else:
                retry.append(item["message_id"])
        if dead:
            limit = bus.settings.max_deliveries
            for raw_id, fields in await bus.redis.xclaim(self.stream, group, self.uid, idle_ms, list(dead)):
                count = dead.get(raw_id, limit)
                reason = f"observed {count} times without being acknowledged (max_deliveries={limit})"
                await bus.dead_letter(self.stream, group, raw_id.decode(), reason, count, (fields or {}).get(b"e"))
        if retry:
            claimed = await bus.redis.xclaim(self.stream, group, self.uid, idle_ms, retry)
            if claimed:
                bus.transport.reclaimed += len(claimed)
                await self._observe(claimed)

    async def _observe(self, entries: list[Entry]) -> None:
        """Hand the batch to the observer; acknowledge it only if the observer returned."""
        if not entries:
            return
        batch: list[Envelope] = []
        for _raw_id, fields in entries:
            envelope, reason, _ = decode_entry(fields)
            if envelope is None:
                log.warning("wiretap skipped an invalid entry: %s", reason)
                continue
            batch.append(envelope)
        ids = [raw_id for raw_id, _ in entries]
        self.inflight = ids
        self._settled.clear()
        try:
            if batch:
                try:
                    await self.observer(batch)
                except Exception:
                    log.exception("wiretap observer failed on %d envelopes; left pending for redelivery", len(batch))
                    return
            await self.bus.redis.xack(self.stream, self.spec.group, *ids)
        finally:
            self.inflight = []
            self._settled.set()

    async def stop(self, timeout: float = 0.0) -> None:
        """Stop reading; let a running observer finish and acknowledge (up to ``timeout``), then cancel."""
        self.stopping = True
        if timeout > 0 and not self._settled.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._settled.wait()
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task

    def abort(self) -> None:
        self.stopping = True
        if self.task is not None:
            self.task.cancel()

    async def cancel(self) -> None:
        if self.cancelled:
            return
        self.cancelled = True
        await self.bus.unregister_tap(self)
