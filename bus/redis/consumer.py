"""One subscription on Redis: read a stream as a consumer group, claim, handle, acknowledge.

Delivery is at least once (an entry is acknowledged only after its handler finished
and its reply was published); a per-(group, envelope id) claim key turns that into
"effects once" for everything but a crash inside the idempotence window (see
requirements/bus-redis.md).

Round trips are what a request costs (each one is a wake-up of this process and of
Redis), so the common case makes two per entry: the read, and the settle. The claim
is usually made by the publish script (a fresh entry marked ``c``), and replies that
finish together are settled in one pipeline.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pydantic import ValidationError
from redis.exceptions import ResponseError

from bus.base import Slots, Subscription, SubscriptionSpec, delivering, run_handler
from bus.envelope import Envelope, Kind, parse_envelope, validation_error
from bus.redis.backoff import TRANSIENT, Backoff, is_nogroup
from bus.redis.lua import PRECLAIM_MS, glob_to_lua, publish_args
from bus.redis.replies import to_requester
from bus.redis.settings import SEP

if TYPE_CHECKING:
    from bus.redis.bus import RedisBus

log = logging.getLogger(__name__)

Entry = tuple[bytes, dict[bytes, bytes] | None]


@dataclass(slots=True)
class Settled:
    """A handled request waiting for its settle step (reply + done marker + ack)."""

    entry_id: str
    key: str
    reply: Envelope
    request: Envelope
    done: asyncio.Future[None]


def decode_entry(fields: dict[bytes, bytes] | None) -> tuple[Envelope | None, str, bytes | None]:
    """The envelope in a stream entry, or ``None`` and the reason it is not one."""
    raw = (fields or {}).get(b"e")
    if raw is None:
        return None, "entry has no 'e' field holding an envelope", None
    try:
        return parse_envelope(raw), "", raw
    except ValidationError as exc:
        return None, validation_error(exc).message, raw


def preclaim_horizon_ms(heartbeat: float) -> float:
    """How old (ms, by this process's clock) a pre-claimed entry may be and still skip ``CLAIM``.

    The claim must outlive the wait until this consumer's heartbeat first renews it,
    with room for clock skew between this host and Redis: at most half its lifetime,
    less two heartbeats. Zero or less disables the shortcut (very slow heartbeats).
    """
    return min(PRECLAIM_MS / 2, PRECLAIM_MS - 2 * heartbeat * 1000)


def preclaimed(entry_id: str, fields: dict[bytes, bytes] | None, envelope: Envelope, trusted_since: float) -> bool:
    """Did the publish script claim this fresh entry for us (``lua.PUBLISH``), recently enough to rely on?

    Such an entry skips the ``CLAIM`` round trip. The mark must name this very envelope;
    an old entry (its id is the server's ms clock at publish) might have outlived its claim.
    """
    mark = (fields or {}).get(b"c")
    return mark is not None and mark == envelope.id.encode() and int(entry_id.split("-", 1)[0]) >= trusted_since


class RedisSubscription(Subscription):
    """A consumer in group ``spec.group`` on one stream, with at most ``spec.concurrency`` handlers working.

    Handlers waiting on I/O (``bus.base.waiting``, up to ``spec.waiting``) do not count: their slots read more.
    """

    def __init__(self, bus: RedisBus, spec: SubscriptionSpec, uid: str, ephemeral: bool) -> None:
        self.bus = bus
        self.spec = spec
        self.uid = uid
        self.ephemeral = ephemeral
        keys = bus.keys
        self.stream = keys.pattern_stream(spec.pattern) if spec.is_pattern else keys.address_stream(spec.pattern)
        if spec.is_pattern:
            self.registry = keys.patterns
            self.member = f"{glob_to_lua(spec.pattern)}{SEP}{spec.pattern}{SEP}{uid}"
        else:
            self.registry = keys.routes(spec.pattern)
            self.member = uid
        self.inflight: dict[str, tuple[asyncio.Task[None], str]] = {}
        self._settling: list[Settled] = []
        self._settle_busy = False
        self._settler: asyncio.Task[None] | None = None
        self._slot = asyncio.Event()
        self._overdue = False
        """A dead consumer's entries wait for a handler slot: the next free slot reclaims before reading."""
        self._reclaiming = asyncio.Lock()
        self.slots = Slots(spec, self._slot.set)
        """A handler waiting on I/O frees its slot for the next entry (``bus.base.waiting``)."""
        self._tasks: list[asyncio.Task[None]] = []
        self.stopping = False
        self.cancelled = False

    def registration(self, start: str) -> list[str | int]:
        """Arguments for the REGISTER script: route entry plus group (created at ``start`` if missing)."""
        grace = 0 if self.ephemeral else int(self.bus.settings.orphan_grace * 1000)
        return [self.registry, self.member, self.stream, self.spec.group, start, grace]

    def start(self) -> None:
        name = f"bus:{self.spec.pattern}"
        self._tasks = [
            asyncio.create_task(self._read_loop(), name=f"{name}:read"),
            asyncio.create_task(self._reclaim_loop(), name=f"{name}:reclaim"),
        ]

    async def _read_loop(self) -> None:
        bus, spec = self.bus, self.spec
        backoff = Backoff(bus.settings.backoff_max)
        block_ms = int(bus.settings.block * 1000)
        while not self.stopping:
            free = spec.concurrency + self.slots.parked - len(self.inflight)
            if free <= 0:
                self._slot.clear()
                await self._slot.wait()
                continue
            try:
                if self._overdue:
                    await self.reclaim_once()
                    continue
                response = await bus.redis.xreadgroup(
                    spec.group, self.uid, {self.stream: ">"}, count=free, block=block_ms
                )
                for _stream, entries in response or []:
                    await self._accept(entries)
                    # let the new handlers run (and a quick one send its settle) before the next
                    # read goes out: on a busy host that send is ~100 µs of the request's latency
                    await asyncio.sleep(0)
            except ResponseError as exc:
                if not is_nogroup(exc):
                    log.warning("reading %s failed: %s", self.stream, exc)
                await backoff.wait()
                bus.wake_heartbeat()
                continue
            except TRANSIENT:
                bus.connection_lost()
                await backoff.wait()
                continue
            if backoff.reset():
                bus.wake_heartbeat()

    async def _accept(self, entries: list[Entry], deliveries: int = 1) -> None:
        """Validate, claim by envelope id, then start handlers; duplicates and invalid entries are settled."""
        bus, group = self.bus, self.spec.group
        valid: list[tuple[str, Envelope]] = []
        horizon = preclaim_horizon_ms(bus.settings.heartbeat)
        trusted_since = time.time() * 1000 - horizon if horizon > 0 else float("inf")
        for raw_id, fields in entries:
            entry_id = raw_id.decode()
            envelope, reason, raw = decode_entry(fields)
            if envelope is None:
                bus.counters.rejected += 1
                await bus.dead_letter(self.stream, group, entry_id, reason, deliveries, raw)
                continue
            if deliveries == 1 and preclaimed(entry_id, fields, envelope, trusted_since):
                self._start(entry_id, envelope, bus.keys.dedup(group, envelope.id))
            else:
                valid.append((entry_id, envelope))
        if not valid:
            return
        keys = [bus.keys.dedup(group, envelope.id) for _, envelope in valid]
        claims = [f"run{SEP}{self.stream}/{entry_id}{SEP}{self.uid}" for entry_id, _ in valid]
        results = await bus.scripts.claim(keys=keys, args=[bus.lease_ms, *claims])
        duplicates = []
        for (entry_id, envelope), key, result in zip(valid, keys, results, strict=True):
            if result == b"claimed":
                self._start(entry_id, envelope, key)
            else:
                duplicates.append(entry_id)
        if duplicates:
            bus.transport.duplicates_dropped += len(duplicates)
            await bus.redis.xack(self.stream, group, *duplicates)

    def _start(self, entry_id: str, envelope: Envelope, key: str) -> None:
        task = asyncio.create_task(self._handle(entry_id, envelope, key), name=f"bus:{self.spec.pattern}:h")
        self.inflight[entry_id] = (task, key)

    async def _handle(self, entry_id: str, envelope: Envelope, key: str) -> None:
        try:
            with delivering(self.slots):
                reply = await run_handler(self.spec, envelope, self.bus.counters, self.bus.rules)
            if reply is None:
                await self.bus.finish(self.stream, self.spec.group, entry_id, key, None, envelope)
            else:
                await self._settle(entry_id, key, reply, envelope)
        except Exception:
            log.exception("settling %s on %s failed; it stays pending and will be reclaimed", entry_id, self.stream)
        finally:
            self.inflight.pop(entry_id, None)
            self._slot.set()

    async def _settle(self, entry_id: str, key: str, reply: Envelope, request: Envelope) -> None:
        """Settle a reply; replies that finish while a settle round trip is in flight share the next one.

        Group commit: a lone reply goes out at once, from the handler's own task, and under
        load one pipeline of settle scripts replaces one round trip per reply.
        """
        item = Settled(entry_id, key, reply, request, asyncio.get_running_loop().create_future())
        if self._settle_busy:
            self._settling.append(item)
        else:
            self._settle_busy = True
            try:
                await self._finish_one(item)
            finally:
                if self._settling:
                    self._settler = asyncio.create_task(self._settle_loop(), name=f"bus:{self.spec.pattern}:settle")
                else:
                    self._settle_busy = False
        await item.done

    async def _settle_loop(self) -> None:
        try:
            while self._settling:
                batch, self._settling = self._settling, []
                if len(batch) == 1:
                    await self._finish_one(batch[0])
                else:
                    await self._finish_many(batch)
        finally:
            self._settle_busy = False

    async def _finish_one(self, item: Settled) -> None:
        """The reply alone, through ``bus.finish`` (which retries a lost Redis or a full inbox)."""
        try:
            await self.bus.finish(self.stream, self.spec.group, item.entry_id, item.key, item.reply, item.request)
        except Exception as exc:
            if not item.done.done():
                item.done.set_exception(exc)
            return
        if not item.done.done():
            item.done.set_result(None)

    async def _finish_many(self, batch: list[Settled]) -> None:
        """One pipeline of settle scripts; anything not settled by it goes through ``bus.finish`` one by one."""
        bus, settings = self.bus, self.bus.settings
        done_ttl = int(settings.dedup_window * 1000)
        sha = bus.scripts.publish.sha
        pipe = bus.redis.pipeline(transaction=False)
        for item in batch:
            reply, route = to_requester(item.reply, item.request)
            ack = (self.stream, self.spec.group, item.entry_id, item.key)
            args = publish_args(
                bus.keys.prefix,
                route or reply.recipient,
                reply.kind.value,
                reply.model_dump_json(),
                settings.max_len,
                settings.tap_max_len,
                ack,
                done_ttl,
            )
            pipe.evalsha(sha, 0, *args)
        try:
            results: list[object] = await pipe.execute(raise_on_error=False)
        except TRANSIENT:
            results = [None] * len(batch)
        retry = []
        for item, result in zip(batch, results, strict=True):
            status = result[0] if isinstance(result, list) and result else None
            if status in (b"ok", b"gone"):
                bus.counters.published += 1
                if status == b"gone":
                    bus.counters.late_replies_dropped += 1
                if not item.done.done():
                    item.done.set_result(None)
            else:  # full inbox, script not loaded, Redis lost: the one-by-one path waits and retries
                retry.append(item)
        for item in retry:
            await self._finish_one(item)

    async def _reclaim_loop(self) -> None:
        interval = self.bus.settings.reclaim_idle / 2
        while not self.stopping:
            await asyncio.sleep(interval)
            try:
                await self.reclaim_once()
            except ResponseError as exc:
                if not is_nogroup(exc):
                    log.warning("reclaiming on %s failed: %s", self.stream, exc)
            except TRANSIENT:
                self.bus.connection_lost()

    async def reclaim_once(self) -> None:
        """Take over entries whose consumer stopped renewing them; dead-letter those delivered too often.

        Reclaimed work goes before new work: if every handler slot is busy, the entries found
        are left where they are (a free member of the group may take them) and this
        consumer's next free slot reclaims them before it reads anything new.
        """
        async with self._reclaiming:
            await self._reclaim()

    async def _reclaim(self) -> None:
        bus, group = self.bus, self.spec.group
        idle_ms = int(bus.settings.reclaim_idle * 1000)
        pending = await bus.redis.xpending_range(self.stream, group, min="-", max="+", count=100, idle=idle_ms)
        free = self.spec.concurrency + self.slots.parked - len(self.inflight)
        overdue: list[bytes] = []
        dead: dict[bytes, int] = {}
        for item in pending:
            entry_id = item["message_id"]
            if entry_id.decode() in self.inflight:
                continue
            if item["times_delivered"] >= bus.settings.max_deliveries:
                dead[entry_id] = item["times_delivered"]
            else:
                overdue.append(entry_id)
        if dead:
            await self._dead_letter(dead, idle_ms)
        retry = overdue[: max(free, 0)]
        was_overdue, self._overdue = self._overdue, len(overdue) > len(retry)
        if self._overdue and not retry:
            bus.transport.overdue_waits += 1
            if not was_overdue:
                log.info(
                    "%d entries of a dead consumer on %s wait for a free handler slot (all %d busy); "
                    "they go before new work",
                    len(overdue),
                    self.stream,
                    self.spec.concurrency,
                )
        if retry:
            claimed = await bus.redis.xclaim(self.stream, group, self.uid, idle_ms, retry)
            if claimed:
                bus.transport.reclaimed += len(claimed)
                await self._accept(claimed, deliveries=2)

    async def _dead_letter(self, dead: dict[bytes, int], idle_ms: int) -> None:
        """Move entries delivered ``max_deliveries`` times to ``P:dead``; a request's caller gets a typed error."""
        bus, limit = self.bus, self.bus.settings.max_deliveries
        for raw_id, fields in await bus.redis.xclaim(self.stream, self.spec.group, self.uid, idle_ms, list(dead)):
            count = dead.get(raw_id, limit)
            reason = f"delivered {count} times without being acknowledged (max_deliveries={limit})"
            envelope, _, raw = decode_entry(fields)
            await bus.dead_letter(self.stream, self.spec.group, raw_id.decode(), reason, count, raw)
            if envelope is not None and envelope.kind is Kind.REQUEST:
                await bus.answer_dead_lettered(envelope, reason)

    async def stop_reading(self) -> None:
        """No new entries from now on; handlers already running continue."""
        self.stopping = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def drain(self, timeout: float) -> None:
        """Wait for running handlers (they ack as they finish); cancel what is left (it stays pending)."""
        tasks = [task for task, _ in self.inflight.values()]
        if not tasks:
            return
        _, late = await asyncio.wait(tasks, timeout=timeout)
        for task in late:
            task.cancel()
        if late and self._settler is not None:
            self._settler.cancel()
        for task in late:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def abort(self) -> None:
        """Stop everything at once, acknowledging nothing (a crash, for recovery tests)."""
        self.stopping = True
        for task in self._tasks:
            task.cancel()
        for task, _ in self.inflight.values():
            task.cancel()
        if self._settler is not None:
            self._settler.cancel()

    async def cancel(self) -> None:
        if self.cancelled:
            return
        self.cancelled = True
        await self.bus.unregister(self)
