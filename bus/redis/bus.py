"""``RedisBus``: the :class:`bus.base.Bus` interface on Redis Streams, for several processes.

Layout (``P`` = prefix): one stream per address ``P:s:<address>`` and one per glob
pattern ``P:p:<glob>``, a consumer group per subscribing group, an inbox stream per
bus instance ``P:inbox:<instance>`` for replies, ``P:tap`` for wiretaps and
``P:dead`` for dead letters. Live subscriptions are registered with expiry
(``P:r:<address>``, ``P:pat``), so publishing checks routes atomically (Lua) and
answers ``no_route`` at once. Design and guarantees: requirements/bus-redis.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import secrets
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ResponseError

from bus.base import (
    DEFAULT_CONCURRENCY,
    DEFAULT_MAILBOX,
    DEFAULT_TAP_BATCH,
    DEFAULT_TIMEOUT,
    DEFAULT_WAITING,
    BatchObserver,
    Bus,
    BusBackpressure,
    BusClosed,
    BusError,
    BusStats,
    BusUnavailable,
    Counters,
    DeadlineExceeded,
    DeliveryRules,
    ForgedSender,
    Handler,
    Redact,
    Subscription,
    cancel_running,
    check_tap_args,
    new_spec,
    verbatim,
)
from bus.contract import Contract
from bus.envelope import Envelope, ErrorInfo, Kind
from bus.redis import lua
from bus.redis.backoff import TRANSIENT, Backoff, is_nogroup
from bus.redis.cancellation import CancelChannel
from bus.redis.consumer import RedisSubscription, decode_entry
from bus.redis.dead_letters import DeadLetter, dead_fields, parse_dead
from bus.redis.publisher import ScriptBatcher
from bus.redis.replies import not_running, to_requester
from bus.redis.settings import DEFAULT_URL, INBOX_NAMESPACE, SEP, Keys, RedisBusSettings
from bus.redis.tap import RedisTap

log = logging.getLogger(__name__)


class TransportStats(BaseModel):
    """Redis-only counters, next to the shared :class:`BusStats`."""

    duplicates_dropped: int = 0
    reclaimed: int = 0
    dead_lettered: int = 0
    reconnects: int = 0
    backpressure_waits: int = 0
    overdue_waits: int = 0
    """Reclaim passes that found a dead consumer's entries while every handler slot was busy
    (those entries then take the next free slots, before new work)."""


@dataclass(slots=True)
class _TransportCounters:
    duplicates_dropped: int = 0
    reclaimed: int = 0
    dead_lettered: int = 0
    reconnects: int = 0
    backpressure_waits: int = 0
    overdue_waits: int = 0


class _Scripts:
    def __init__(self, redis: Redis) -> None:
        self.publish = redis.register_script(lua.PUBLISH)
        self.claim = redis.register_script(lua.CLAIM)
        self.register = redis.register_script(lua.REGISTER)
        self.janitor = redis.register_script(lua.JANITOR)


class RedisBus(Bus):
    """Redis Streams transport: ``RedisBus(url, prefix="mad", reclaim_idle=30.0, ...)``.

    Keyword arguments are :class:`RedisBusSettings` fields (validated; a bad value
    raises naming the field). ``settings`` supplies them all at once instead.
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        settings: RedisBusSettings | None = None,
        redact: Redact = verbatim,
        senders: frozenset[str] | None = None,
        **overrides: Any,
    ) -> None:
        self.rules = DeliveryRules(redact=redact)
        self.senders = senders
        """The MADs this process hosts (``None``: any): it may publish only as them (and as people, the
        gateway, the host and the bus when it runs those), so one process cannot speak for another's MADs."""
        base = settings.model_dump() if settings is not None else {}
        self.settings = RedisBusSettings.model_validate({**base, **overrides})
        self.url = url
        self.keys = Keys(self.settings.prefix)
        self.instance = f"{os.getpid()}-{secrets.token_hex(4)}"
        self.inbox_address = f"{INBOX_NAMESPACE}.{self.instance}"
        self.inbox = self.keys.inbox(self.instance)
        self.lease_ms = int(self.settings.reclaim_idle * 1000)
        self.redis: Redis = Redis.from_url(url, retry=Retry(NoBackoff(), 0), socket_connect_timeout=2.0)
        self.scripts = _Scripts(self.redis)
        self._cancels = CancelChannel(
            self.redis, f"{self.settings.prefix}:cancel", self.rules, self.settings.backoff_max
        )
        self._publisher = ScriptBatcher(self.redis, self.scripts.publish)
        self.counters = Counters()
        self.transport = _TransportCounters()
        self._subs: list[RedisSubscription] = []
        self._taps: list[RedisTap] = []
        self._pending: dict[str, tuple[asyncio.Future[Envelope], str]] = {}
        self._seq = itertools.count(1)
        self._depth: dict[str, int] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._wake = asyncio.Event()
        self._lost = False
        self._closing = False
        self._closed = asyncio.Event()
        self._started = False

    # lifecycle

    async def start(self) -> None:
        if self._started:
            return
        if self._closing:
            raise BusClosed("bus is closed")
        try:
            await self._register_all("0")
        except TRANSIENT as exc:
            raise BusUnavailable(f"cannot reach Redis at {self._where()}: {type(exc).__name__}") from exc
        self._started = True
        self._tasks = [
            asyncio.create_task(self._inbox_loop(), name="bus:inbox"),
            asyncio.create_task(self._heartbeat_loop(), name="bus:heartbeat"),
            asyncio.create_task(self._janitor_loop(), name="bus:janitor"),
            asyncio.create_task(self._cancels.listen(), name="bus:cancellations"),
        ]

    def _where(self) -> str:
        kwargs = self.redis.connection_pool.connection_kwargs
        return f"{kwargs.get('host', '?')}:{kwargs.get('port', '?')}/{kwargs.get('db', 0)}"

    async def close(self, drain_timeout: float = 5.0) -> None:
        if self._closing:
            await self._closed.wait()
            return
        self._closing = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + drain_timeout
        try:
            subs, taps = list(self._subs), list(self._taps)
            with contextlib.suppress(*TRANSIENT):
                await self._withdraw_routes(subs)
            for sub in subs:
                await sub.stop_reading()
            for sub in subs:
                await sub.drain(max(0.0, deadline - loop.time()))
            waiting = [future for future, _ in self._pending.values() if not future.done()]
            if waiting:
                await asyncio.wait(waiting, timeout=max(0.0, deadline - loop.time()))
            for future, _ in self._pending.values():
                if not future.done():
                    future.set_exception(BusClosed("bus closed before the reply arrived"))
            self._pending.clear()
            for tap in taps:
                await tap.stop(max(0.0, deadline - loop.time()))
            await self._cancels.close()
            await self._stop_tasks()
            with contextlib.suppress(*TRANSIENT):
                await self._forget(subs, taps, delete_inbox=True)
            self._subs.clear()
            self._taps.clear()
        finally:
            await self.redis.aclose()
            self._closed.set()

    async def abort(self) -> None:
        """Stop at once as if the process died: nothing is acknowledged, drained or unregistered.

        Registrations and the inbox then expire on their own and other instances
        reclaim this one's pending entries: exactly what a crash leaves behind.
        """
        self._closing = True
        for sub in self._subs:
            sub.abort()
        for tap in self._taps:
            tap.abort()
        await self._stop_tasks()
        for future, _ in self._pending.values():
            if not future.done():
                future.set_exception(BusClosed("bus aborted"))
        self._pending.clear()
        await self.redis.aclose()
        self._closed.set()

    async def _stop_tasks(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    # subscriptions

    async def subscribe(
        self,
        pattern: str,
        handler: Handler,
        *,
        group: str | None = None,
        contract: Contract | None = None,
        concurrency: int = DEFAULT_CONCURRENCY,
        mailbox: int = DEFAULT_MAILBOX,
        waiting: int = DEFAULT_WAITING,
    ) -> Subscription:
        """See :meth:`Bus.subscribe`. ``mailbox`` is not used: the stream is the mailbox, bounded by ``max_len``."""
        if self._closing:
            raise BusClosed("bus is closed")
        if group is not None and (not group or SEP in group):
            raise ValueError("group must be a non-empty name without control characters")
        if SEP in pattern:
            raise ValueError("pattern must be an address or glob without control characters")
        uid = f"{self.instance}.{next(self._seq)}"
        spec = new_spec(
            pattern,
            handler,
            group=group,
            contract=contract,
            concurrency=concurrency,
            mailbox=mailbox,
            unique=uid,
            waiting=waiting,
        )
        ephemeral = group is None and spec.is_pattern
        sub = RedisSubscription(self, spec, uid, ephemeral)
        await self._register([sub.registration("$")])
        self._subs.append(sub)
        sub.start()
        return sub

    async def wiretap_batches(
        self,
        observer: BatchObserver,
        *,
        batch: int = DEFAULT_TAP_BATCH,
        mailbox: int = DEFAULT_MAILBOX,
        group: str | None = None,
    ) -> Subscription:
        """See :meth:`Bus.wiretap_batches`: ``XREADGROUP COUNT batch`` → observer → ``XACK``.

        ``group`` shares one tap position between instances (Rogers). ``mailbox`` is not
        used: the tap stream is the mailbox.
        """
        if self._closing:
            raise BusClosed("bus is closed")
        check_tap_args(batch, mailbox)
        if group is not None and (not group or SEP in group):
            raise ValueError("group must be a non-empty name without control characters")
        uid = f"{self.instance}.{next(self._seq)}"
        tap = RedisTap(self, observer, uid, group or f"tap#{uid}", ephemeral=group is None, batch=batch)
        await self._register([tap.registration("$")])
        self._taps.append(tap)
        tap.start()
        return tap

    async def unregister(self, sub: RedisSubscription) -> None:
        """Cancel one subscription: route gone at once, running handlers finish, a private group is destroyed."""
        with contextlib.suppress(*TRANSIENT):
            await self.redis.zrem(sub.registry, sub.member)
        await sub.stop_reading()
        await sub.drain(self.settings.retry_timeout)
        if sub in self._subs:
            self._subs.remove(sub)
        with contextlib.suppress(*TRANSIENT):
            await self._forget([sub], [], delete_inbox=False)

    async def unregister_tap(self, tap: RedisTap) -> None:
        """Cancel one tap: a batch being observed finishes and is acknowledged (up to ``retry_timeout``)."""
        await tap.stop(self.settings.retry_timeout)
        if tap in self._taps:
            self._taps.remove(tap)
        with contextlib.suppress(*TRANSIENT):
            await self._forget([], [tap], delete_inbox=False)

    async def _withdraw_routes(self, subs: list[RedisSubscription]) -> None:
        """Stop routing to these subscriptions before draining them, so other instances take new work."""
        if subs:
            pipe = self.redis.pipeline(transaction=False)
            for sub in subs:
                pipe.zrem(sub.registry, sub.member)
            await pipe.execute(raise_on_error=False)

    async def _forget(self, subs: list[RedisSubscription], taps: list[RedisTap], *, delete_inbox: bool) -> None:
        pipe = self.redis.pipeline(transaction=False)
        for sub in subs:
            pipe.zrem(sub.registry, sub.member)
            if sub.ephemeral:
                pipe.xgroup_destroy(sub.stream, sub.spec.group)
                pipe.zrem(self.keys.groups, f"{sub.stream}{SEP}{sub.spec.group}")
        for tap in taps:
            pipe.zrem(self.keys.taps, tap.uid)
            if tap.ephemeral:
                pipe.xgroup_destroy(tap.stream, tap.spec.group)
                pipe.zrem(self.keys.groups, f"{tap.stream}{SEP}{tap.spec.group}")
        if delete_inbox:
            pipe.delete(self.inbox)
        await pipe.execute(raise_on_error=False)

    async def _register(self, entries: list[list[str | int]], inbox: bool = False) -> None:
        args: list[str | int] = [self.keys.prefix, int(self.settings.presence_ttl * 1000), self.inbox if inbox else ""]
        for entry in entries:
            args.extend(entry)
        await self.scripts.register(keys=[], args=args)

    async def _register_all(self, start: str) -> None:
        entries = [s.registration(start) for s in self._subs if not s.stopping]
        entries += [t.registration(start) for t in self._taps]
        await self._register(entries, inbox=True)

    # publishing

    async def publish(self, envelope: Envelope) -> None:
        if self._closing:
            raise BusClosed("bus is closing; nothing new is accepted")
        self.check_sender(envelope)
        await self._publish(envelope)

    async def _publish(
        self,
        envelope: Envelope,
        ack: tuple[str, str, str, str] | None = None,
        patience: float | None = None,
        route: str | None = None,
        attempt: _Attempt | None = None,
    ) -> None:
        """One atomic step in Redis: route check, backpressure, wiretap copy, write (and ack, for a reply).

        ``route`` (default: the recipient) is where the script delivers; a reply is routed
        to the requester's inbox while the envelope itself stays addressed to the requester.
        Calls made in the same loop turn go to Redis as one pipeline (:class:`ScriptBatcher`).
        """
        settings = self.settings
        args = lua.publish_args(
            self.keys.prefix,
            route or envelope.recipient,
            envelope.kind.value,
            envelope.model_dump_json(),
            settings.max_len,
            settings.tap_max_len,
            ack,
            int(settings.dedup_window * 1000) if ack is not None else 0,
        )
        loop = asyncio.get_running_loop()
        give_up = loop.time() + (settings.retry_timeout if patience is None else patience)
        backoff = Backoff(settings.backoff_max)
        while True:
            try:
                result = await self._publisher.call(args)
            except TRANSIENT as exc:
                self.connection_lost()
                if loop.time() >= give_up:
                    raise BusUnavailable(f"Redis unreachable while publishing {envelope.id}") from exc
                await backoff.wait(give_up - loop.time())
                continue
            status = result[0].decode()
            if status != "full":
                break
            self.transport.backpressure_waits += 1
            if attempt is not None:
                attempt.full = result[1].decode()
            if loop.time() >= give_up:
                raise BusBackpressure(_full_message(result[1].decode(), settings.max_len))
            await backoff.wait(give_up - loop.time())
        if backoff.reset():
            self.wake_heartbeat()
        self.counters.published += 1
        if status == "no_route":
            self.counters.undeliverable += 1
            answer, route = to_requester(not_running(envelope), envelope)
            await self._publish(answer, patience=patience, route=route)
        elif status == "undeliverable":
            self.counters.undeliverable += 1
        elif status == "gone":
            self.counters.late_replies_dropped += 1

    async def finish(
        self, stream: str, group: str, entry_id: str, key: str, reply: Envelope | None, request: Envelope | None = None
    ) -> None:
        """Settle a handled entry: publish the reply, mark the envelope done and ack, all in one step."""
        if reply is not None:
            route = None
            if request is not None:
                reply, route = to_requester(reply, request)
            await self._publish(reply, ack=(stream, group, entry_id, key), route=route)
            return
        backoff = Backoff(self.settings.backoff_max)
        loop = asyncio.get_running_loop()
        give_up = loop.time() + self.settings.retry_timeout
        while True:
            try:
                pipe = self.redis.pipeline(transaction=True)
                pipe.set(key, "done", px=int(self.settings.dedup_window * 1000))
                pipe.xack(stream, group, entry_id)
                await pipe.execute()
                return
            except TRANSIENT:
                self.connection_lost()
                if loop.time() >= give_up:
                    raise
                await backoff.wait()

    async def dead_letter(
        self, stream: str, group: str, entry_id: str, reason: str, deliveries: int, payload: bytes | None
    ) -> None:
        """Move an entry to ``P:dead`` with its reason and ack it, in one transaction."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.xadd(
            self.keys.dead,
            dead_fields(stream, group, entry_id, reason, deliveries, payload),  # type: ignore[arg-type]
            maxlen=self.settings.dead_max_len,
            approximate=True,
        )
        pipe.xack(stream, group, entry_id)
        await pipe.execute()
        self.transport.dead_lettered += 1
        log.warning("dead-lettered %s from %s: %s", entry_id, stream, reason[:200])

    async def answer_dead_lettered(self, request: Envelope, reason: str) -> None:
        """Tell a dead-lettered request's caller at once (a typed error), rather than let it wait out its deadline."""
        error = ErrorInfo(
            code="dead_lettered",
            message=(
                f"{request.recipient!r} could not handle this request: {reason}; "
                "it was moved to the dead letters for an operator to inspect"
            ),
            retryable=False,
        )
        answer, route = to_requester(request.error_reply(error, sender="bus"), request)
        try:
            await self._publish(answer, route=route)
        except (BusUnavailable, BusBackpressure) as exc:
            log.warning("could not tell the caller of dead-lettered %s: %s", request.id, exc)

    async def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """The most recent dead letters, newest first."""
        if limit < 1:
            raise ValueError("limit must be at least 1")
        entries = await self.redis.xrevrange(self.keys.dead, count=limit)
        return [parse_dead(entry_id, fields) for entry_id, fields in entries]

    # request / reply

    async def request(self, envelope: Envelope, timeout: float | None = None) -> Envelope:
        """See :meth:`Bus.request`. ``reply_to`` is set to this bus's inbox; the reply handed back is
        addressed to the requester (``reply_to or sender`` of the request), as on every transport."""
        if self._closing:
            raise BusClosed("bus is closing; nothing new is accepted")
        if envelope.kind is not Kind.REQUEST:
            raise ValueError(f"request() needs kind=request, got {envelope.kind}")
        self.check_sender(envelope)
        wait = envelope.remaining()
        if wait is None:
            wait = timeout if timeout is not None else DEFAULT_TIMEOUT
        requester = envelope.reply_to or envelope.sender
        outgoing = envelope.model_copy(update={"reply_to": self.inbox_address})
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Envelope] = loop.create_future()
        self._pending[envelope.id] = (future, requester)
        attempt = _Attempt()
        try:
            async with asyncio.timeout(wait):
                await self._publish(outgoing, patience=wait, attempt=attempt)
                attempt.sent = True
                return await future
        except TimeoutError:
            raise attempt.failure(envelope, wait, self.settings.max_len) from None
        except asyncio.CancelledError:
            self.cancel(envelope.id)  # whoever asked stopped waiting: so does the work, in whichever process
            raise
        finally:
            self._pending.pop(envelope.id, None)

    def cancel(self, request_id: str) -> bool:
        """See :meth:`Bus.cancel`: applied here at once and broadcast to every other process."""
        here = cancel_running(self.rules, request_id)
        if not self._closing:
            self._cancels.announce(request_id)
        return here

    def check_sender(self, envelope: Envelope) -> None:
        """Refuse to publish as a MAD this process does not host (:attr:`senders`)."""
        if self.senders is not None and envelope.sender.split(".", 1)[0] not in self.senders:
            raise ForgedSender(f"this process does not host {envelope.sender!r} and may not send as it")

    async def _inbox_loop(self) -> None:
        backoff = Backoff(self.settings.backoff_max)
        block_ms = int(self.settings.block * 1000)
        while True:
            try:
                response = await self.redis.xreadgroup(
                    "inbox", "owner", {self.inbox: ">"}, count=256, block=block_ms, noack=True
                )
            except ResponseError as exc:
                if not is_nogroup(exc):
                    log.warning("reading the inbox failed: %s", exc)
                self.wake_heartbeat()
                await backoff.wait()
                continue
            except TRANSIENT:
                self.connection_lost()
                await backoff.wait()
                continue
            if backoff.reset():
                self.wake_heartbeat()
            for _stream, entries in response or []:
                for raw_id, fields in entries:
                    await self._deliver_reply(raw_id, fields)
            if response:
                # Let the requesters just answered run before the next blocking read goes out.
                await asyncio.sleep(0)

    async def _deliver_reply(self, raw_id: bytes, fields: dict[bytes, bytes] | None) -> None:
        reply, reason, raw = decode_entry(fields)
        if reply is None:
            self.counters.rejected += 1
            with contextlib.suppress(*TRANSIENT):
                await self.dead_letter(self.inbox, "inbox", raw_id.decode(), reason, 1, raw)
            return
        waiting = self._pending.pop(reply.correlation_id or "", None)
        if waiting is None or waiting[0].done():
            self.counters.late_replies_dropped += 1
            return
        future, requester = waiting
        if reply.recipient != requester:
            reply = reply.model_copy(update={"recipient": requester})
        future.set_result(reply)

    # upkeep

    def connection_lost(self) -> None:
        """A loop saw Redis go away: re-register as soon as it is back (a restart loses everything)."""
        if not self._lost:
            self._lost = True
            self.transport.reconnects += 1
            log.warning("lost Redis at %s; retrying with backoff", self._where())
        self._wake.set()

    def wake_heartbeat(self) -> None:
        self._wake.set()

    async def _heartbeat_loop(self) -> None:
        backoff = Backoff(self.settings.backoff_max)
        while True:
            try:
                await self._register_all("0")
                await self._renew_leases()
            except TRANSIENT:
                self.connection_lost()
                await backoff.wait()
                continue
            if self._lost:
                self._lost = False
                log.warning("Redis at %s is back; subscriptions re-registered", self._where())
            backoff.reset()
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.heartbeat):
                    await self._wake.wait()

    async def _renew_leases(self) -> None:
        """Keep running handlers' and tap observers' entries fresh so no other consumer reclaims live work."""
        busy = [sub for sub in self._subs if sub.inflight]
        observing = [tap for tap in self._taps if tap.inflight]
        if not busy and not observing:
            return
        pipe = self.redis.pipeline(transaction=False)
        for sub in busy:
            entries = list(sub.inflight.items())
            pipe.xclaim(sub.stream, sub.spec.group, sub.uid, 0, [e for e, _ in entries], justid=True)
            for _, (_, key) in entries:
                pipe.pexpire(key, self.lease_ms)
        for tap in observing:
            pipe.xclaim(tap.stream, tap.spec.group, tap.uid, 0, list(tap.inflight), justid=True)
        await pipe.execute(raise_on_error=False)

    async def _janitor_loop(self) -> None:
        while True:
            try:
                await self.janitor()
                await self.refresh_queue_depth()
            except TRANSIENT:
                self.connection_lost()
            except ResponseError as exc:
                log.warning("janitor failed: %s", exc)
            await asyncio.sleep(self.settings.janitor_interval)

    async def janitor(self) -> tuple[int, int]:
        """Run one janitor pass now: ``(groups destroyed, entries trimmed)``."""
        idle_ms = int(max(self.settings.presence_ttl, self.settings.reclaim_idle) * 1000)
        destroyed, trimmed = await self.scripts.janitor(keys=[self.inbox], args=[self.keys.prefix, idle_ms])
        return int(destroyed), int(trimmed)

    async def refresh_queue_depth(self) -> dict[str, int]:
        """Unfinished work per subscription (pending + not yet delivered), as ``stats()`` reports it."""
        depth: dict[str, int] = {}
        streams = {sub.stream for sub in self._subs}
        if streams:
            pipe = self.redis.pipeline(transaction=False)
            ordered = sorted(streams)
            for stream in ordered:
                pipe.xinfo_groups(stream)
            infos = await pipe.execute(raise_on_error=False)
            by_stream = {s: i for s, i in zip(ordered, infos, strict=True) if not isinstance(i, Exception)}
            for sub in self._subs:
                for group in by_stream.get(sub.stream, []):
                    if _text(group.get("name")) == sub.spec.group:
                        depth[sub.spec.pattern] = int(group.get("pending") or 0) + int(group.get("lag") or 0)
        self._depth = depth
        return depth

    def stats(self) -> BusStats:
        """Counters of this instance; ``queue_depth`` as of the last janitor pass (see ``refresh_queue_depth``)."""
        return self.counters.snapshot(dict(self._depth))

    def transport_stats(self) -> TransportStats:
        t = self.transport
        return TransportStats(
            duplicates_dropped=t.duplicates_dropped,
            reclaimed=t.reclaimed,
            dead_lettered=t.dead_lettered,
            reconnects=t.reconnects,
            backpressure_waits=t.backpressure_waits,
            overdue_waits=t.overdue_waits,
        )


def _full_message(stream: str, max_len: int) -> str:
    return f"{stream} stayed full ({max_len} unacknowledged entries): its consumers are not keeping up"


@dataclass(slots=True)
class _Attempt:
    """How far one ``request()`` got, so running out of time names the real cause."""

    sent: bool = False
    full: str | None = None
    """The last stream found full while publishing (backpressure)."""

    def failure(self, envelope: Envelope, wait: float, max_len: int) -> BusError:
        """Out of time: a request a full stream kept out was refused (backpressure), not left unanswered."""
        if not self.sent and self.full is not None:
            return BusBackpressure(_full_message(self.full, max_len))
        return DeadlineExceeded(envelope, wait)


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
