"""``InMemoryBus``: the default transport, one asyncio event loop, no serialisation.

Each subscription owns a bounded mailbox (``asyncio.Queue(maxsize)``) drained by a
fixed number of worker tasks, so a slow subscriber pushes back on publishers
instead of growing memory without bound. Envelopes are immutable pydantic
objects, validated when built, and pass between MADs by reference.

Request/reply is the hot path, so it avoids work the semantics do not need:
delivery is synchronous (``put_nowait``) whenever every mailbox has room and
only awaits when one is full; deadlines live in one heap swept by a single timer
instead of a ``TimerHandle`` per request (asyncio's timer heap compares handles
in Python, and every cancelled handle stays in it until a cleanup pass).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import heapq
import itertools
import logging
import math
import time

from bus.base import (
    CURRENT_DELIVERY,
    DEFAULT_CONCURRENCY,
    DEFAULT_MAILBOX,
    DEFAULT_TAP_BATCH,
    DEFAULT_TIMEOUT,
    DEFAULT_WAITING,
    TAP_ATTEMPTS,
    BatchObserver,
    Bus,
    BusClosed,
    BusStats,
    Counters,
    DeadlineExceeded,
    Delivery,
    DeliveryRules,
    Handler,
    Redact,
    Slots,
    Subscription,
    SubscriptionSpec,
    check_tap_args,
    new_spec,
    no_route,
    run_handler,
    verbatim,
)
from bus.contract import Contract
from bus.envelope import Envelope, Kind

log = logging.getLogger(__name__)

_REQUEST = Kind.REQUEST
_REPLY = Kind.REPLY
_ERROR = Kind.ERROR
_CLOCK_RESOLUTION = time.get_clock_info("monotonic").resolution
"""asyncio runs a timer this early at most; the sweeper uses the same tolerance."""
_COMPACT_SLACK = 1024
"""Finished requests may leave this many stale heap entries (beyond the live ones) before a compaction."""
_get_running_loop = asyncio.get_running_loop
_TAP_RETRY_FIRST, _TAP_RETRY_MAX = 0.05, 1.0
"""Backoff between deliveries of a batch whose observer raised."""


class _Expired(Exception):
    """Set on a request's future by the deadline sweeper; turned into :class:`DeadlineExceeded`."""


class _Mailbox:
    """A subscription's bounded FIFO: what ``asyncio.Queue`` does for it, in fewer steps.

    Every request and event passes through one, so the common cases are each one call:
    :meth:`offer` (room: append, wake one idle worker), :meth:`get` (an envelope waiting:
    take it), :meth:`task_done`. Waiting for room (:meth:`put`), for work (:meth:`get`) and
    for the mailbox to drain (:meth:`join`) behave as ``asyncio.Queue``'s do, cancellation
    included: a cancelled waiter passes its wake-up on.
    """

    __slots__ = ("getters", "items", "joiners", "maxsize", "putters", "unfinished")

    def __init__(self, maxsize: int) -> None:
        self.items: collections.deque[Envelope] = collections.deque()
        self.maxsize = maxsize
        self.getters: collections.deque[asyncio.Future[None]] = collections.deque()
        self.putters: collections.deque[asyncio.Future[None]] = collections.deque()
        self.unfinished = 0
        """Envelopes taken in but not yet handled (:meth:`join` waits for none)."""
        self.joiners: list[asyncio.Future[None]] = []

    def full(self) -> bool:
        return len(self.items) >= self.maxsize

    def qsize(self) -> int:
        return len(self.items)

    def offer(self, item: Envelope) -> bool:
        """Append ``item`` if there is room (and wake one idle worker); ``False`` if the mailbox is full."""
        items = self.items
        if len(items) >= self.maxsize:
            return False
        items.append(item)
        self.unfinished += 1
        getters = self.getters
        while getters:
            getter = getters.popleft()
            if not getter.done():
                getter.set_result(None)
                break
        return True

    async def put(self, item: Envelope) -> None:
        """Append ``item``, waiting while the mailbox is full (backpressure)."""
        while len(self.items) >= self.maxsize:
            putter = asyncio.get_running_loop().create_future()
            self.putters.append(putter)
            try:
                await putter
            except BaseException:
                self._abandon(putter, self.putters, len(self.items) < self.maxsize)
                raise
        self.offer(item)

    async def get(self) -> Envelope:
        """The oldest envelope, waiting for one if the mailbox is empty."""
        items = self.items
        while not items:
            getter = _get_running_loop().create_future()
            self.getters.append(getter)
            try:
                await getter
            except BaseException:
                self._abandon(getter, self.getters, bool(items))
                raise
        item = items.popleft()
        putters = self.putters
        while putters:
            putter = putters.popleft()
            if not putter.done():
                putter.set_result(None)
                break
        return item

    @staticmethod
    def _abandon(waiter: asyncio.Future[None], waiters: collections.deque[asyncio.Future[None]], ready: bool) -> None:
        """A waiter was cancelled: forget it, and if it had been woken, wake the next one instead."""
        woken = waiter.done() and not waiter.cancelled()
        waiter.cancel()
        with contextlib.suppress(ValueError):
            waiters.remove(waiter)
        if woken and ready:
            while waiters:
                other = waiters.popleft()
                if not other.done():
                    other.set_result(None)
                    break

    def task_done(self) -> None:
        self.unfinished -= 1
        if self.unfinished == 0 and self.joiners:
            for joiner in self.joiners:
                if not joiner.done():
                    joiner.set_result(None)
            self.joiners.clear()

    async def join(self) -> None:
        """Wait until every envelope taken in has been handled."""
        if self.unfinished:
            joiner = asyncio.get_running_loop().create_future()
            self.joiners.append(joiner)
            await joiner


class _MemorySubscription(Subscription):
    """A mailbox drained by workers: ``concurrency`` of them free to work, one more per waiting handler.

    When a handler starts waiting on I/O (:func:`bus.base.waiting`), a worker is added so that
    ``concurrency`` workers stay free to take envelopes; when it is done waiting, a worker that
    finds itself surplus after its envelope leaves. So up to ``concurrency + waiting`` handlers
    are under way, and never more than ``concurrency`` of them doing anything but wait.
    """

    def __init__(self, bus: InMemoryBus, spec: SubscriptionSpec) -> None:
        self.bus = bus
        self.spec = spec
        self.queue = _Mailbox(spec.mailbox)
        self.workers: set[asyncio.Task[None]] = set()
        self.slots = Slots(spec, self._freed)
        self.busy = 0
        self.stopping = False

    def start(self) -> None:
        for _ in range(self.spec.concurrency):
            self._spawn()

    def _spawn(self) -> None:
        task = asyncio.create_task(self._work(), name=f"bus:{self.spec.pattern}:{len(self.workers)}")
        self.workers.add(task)

    def _freed(self) -> None:
        """A handler started waiting: keep ``concurrency`` workers free to take the next envelopes."""
        if not self.stopping and len(self.workers) - self.slots.parked < self.spec.concurrency:
            self._spawn()

    async def _work(self) -> None:
        bus, spec, slots = self.bus, self.spec, self.slots
        get, task_done, stats = self.queue.get, self.queue.task_done, bus._stats
        concurrency, workers = spec.concurrency, self.workers
        # One claim per worker, set once in the worker's own context: a handler's waits (and those of
        # tasks it starts) count against it; they balance, so it is back at depth 0 between envelopes.
        CURRENT_DELIVERY.set(Delivery(slots))
        me = asyncio.current_task()
        while True:
            item = await get()
            self.busy += 1
            try:
                reply = await run_handler(spec, item, stats, bus.rules, task=me)
                if reply is not None and not bus._publish_nowait(reply):
                    await bus._publish(reply)
            except Exception:
                log.exception("bus worker for %s failed", spec.pattern)
            finally:
                self.busy -= 1
                task_done()
            if len(workers) - slots.parked > concurrency:
                workers.discard(me)  # type: ignore[arg-type]
                return

    async def drain(self) -> None:
        await self.queue.join()

    async def stop(self) -> None:
        self.stopping = True
        workers = list(self.workers)
        for worker in workers:
            worker.cancel()
        for worker in workers:
            with contextlib.suppress(asyncio.CancelledError):
                await worker
        self.workers.clear()

    async def cancel(self) -> None:
        self.bus._remove(self)
        await self.stop()


class _Tap(Subscription):
    """Drains the tap mailbox into observer calls; an envelope leaves the mailbox once its batch was seen."""

    def __init__(self, bus: InMemoryBus, observer: BatchObserver, batch: int, mailbox: int) -> None:
        self.bus = bus
        self.observer = observer
        self.batch = batch
        self.spec = SubscriptionSpec(pattern="*", handler=self._never, group="wiretap")
        self.queue: asyncio.Queue[Envelope] = asyncio.Queue(mailbox)
        self._settled = asyncio.Event()
        self._settled.set()
        self.stopping = False
        self.task = asyncio.create_task(self._work(), name="bus:wiretap")

    @staticmethod
    async def _never(envelope: Envelope) -> None:
        return None

    async def _work(self) -> None:
        queue, size = self.queue, self.batch
        while not self.stopping:
            batch = [await queue.get()]
            while len(batch) < size and not queue.empty():
                batch.append(queue.get_nowait())
            self._settled.clear()
            try:
                await self._observe(batch)
            finally:
                self._settled.set()
                for _ in batch:
                    queue.task_done()

    async def _observe(self, batch: list[Envelope]) -> None:
        """Call the observer until it returns, at most ``TAP_ATTEMPTS`` times; newer envelopes wait."""
        for attempt in range(1, TAP_ATTEMPTS + 1):
            try:
                await self.observer(batch)
                return
            except Exception:
                if attempt == TAP_ATTEMPTS:
                    log.exception("wiretap observer failed %d times; dropping %d envelopes", attempt, len(batch))
                    return
                log.warning("wiretap observer failed on %d envelopes (attempt %d); retrying", len(batch), attempt)
                await asyncio.sleep(min(_TAP_RETRY_FIRST * 2 ** (attempt - 1), _TAP_RETRY_MAX))

    async def cancel(self) -> None:
        """Stop tapping; a batch being observed finishes first (up to ``DEFAULT_TIMEOUT``), the rest is dropped."""
        if self in self.bus._taps:
            self.bus._taps.remove(self)
        self.stopping = True
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(DEFAULT_TIMEOUT):
                await self._settled.wait()
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


class InMemoryBus(Bus):
    """A bus inside one process: bounded mailboxes, deadlines, a wiretap."""

    def __init__(self, *, redact: Redact = verbatim) -> None:
        self.rules = DeliveryRules(redact=redact)
        self._exact: dict[str, list[_MemorySubscription]] = {}
        self._patterns: list[_MemorySubscription] = []
        self._taps: list[_Tap] = []
        self._pending: dict[str, asyncio.Future[Envelope]] = {}
        self._deadlines: list[tuple[float, int, asyncio.Future[Envelope]]] = []
        self._deadline_seq = itertools.count()
        self._sweeper: asyncio.TimerHandle | None = None
        self._sweep_at = math.inf
        self._sweep_loop: asyncio.AbstractEventLoop | None = None
        self._rr = itertools.count()
        self._stats = Counters()
        self._closing = False
        self._started = False

    async def start(self) -> None:
        self._started = True

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
        if self._closing:
            raise BusClosed("bus is closed")
        spec = new_spec(
            pattern,
            handler,
            group=group,
            contract=contract,
            concurrency=concurrency,
            mailbox=mailbox,
            unique=str(next(self._rr)),
            waiting=waiting,
        )
        sub = _MemorySubscription(self, spec)
        sub.start()
        if spec.is_pattern:
            self._patterns.append(sub)
        else:
            self._exact.setdefault(pattern, []).append(sub)
        return sub

    def _remove(self, sub: _MemorySubscription) -> None:
        if sub.spec.is_pattern:
            if sub in self._patterns:
                self._patterns.remove(sub)
        else:
            subs = self._exact.get(sub.spec.pattern, [])
            if sub in subs:
                subs.remove(sub)
            if not subs:
                self._exact.pop(sub.spec.pattern, None)

    async def wiretap_batches(
        self,
        observer: BatchObserver,
        *,
        batch: int = DEFAULT_TAP_BATCH,
        mailbox: int = DEFAULT_MAILBOX,
        group: str | None = None,
    ) -> Subscription:
        """See :meth:`Bus.wiretap_batches`. In one process every tap sees everything, whatever its ``group``."""
        check_tap_args(batch, mailbox)
        tap = _Tap(self, observer, batch, mailbox)
        self._taps.append(tap)
        return tap

    def _targets(self, address: str) -> list[_MemorySubscription]:
        exact = self._exact.get(address)
        if not self._patterns:
            return self._pick(exact) if exact else []
        matched = list(exact or ()) + [s for s in self._patterns if s.spec.matches(address)]
        return self._pick(matched)

    def _pick(self, subs: list[_MemorySubscription]) -> list[_MemorySubscription]:
        """One subscription per group (round robin inside a group)."""
        if len(subs) == 1:
            return subs
        groups: dict[str, list[_MemorySubscription]] = {}
        for sub in subs:
            groups.setdefault(sub.spec.group, []).append(sub)
        turn = next(self._rr)
        return [members[turn % len(members)] for members in groups.values()]

    def has_listeners(self, address: str) -> bool:
        """A subscription (exact or glob) takes messages to ``address``; wiretaps do not count."""
        return bool(self._exact.get(address)) or any(s.spec.matches(address) for s in self._patterns)

    def has_room(self, address: str) -> bool:
        """No mailbox that a message to ``address`` would go to is full."""
        subs = [*self._exact.get(address, ()), *(s for s in self._patterns if s.spec.matches(address))]
        return not any(sub.queue.full() for sub in subs)

    async def publish(self, envelope: Envelope) -> None:
        if self._closing:
            raise BusClosed("bus is closing; nothing new is accepted")
        if not self._publish_nowait(envelope):
            await self._publish(envelope)

    def _publish_nowait(self, envelope: Envelope) -> bool:
        """Deliver at once if no mailbox involved is full; ``False`` (and nothing done) otherwise.

        The common case of :meth:`_publish`, without a coroutine or a suspension.
        Routing to nobody also returns ``False``: the no-route reply takes the slow path.
        """
        taps = self._taps
        for tap in taps:
            if tap.queue.full():
                return False
        kind = envelope.kind
        if (kind is _REPLY or kind is _ERROR) and envelope.correlation_id is not None:
            self._stats.published += 1
            for tap in taps:
                tap.queue.put_nowait(envelope)
            self._resolve(envelope)
            return True
        targets = self._exact.get(envelope.recipient)
        if targets is None or len(targets) != 1 or self._patterns:
            targets = self._targets(envelope.recipient)
        if len(targets) == 1 and not taps:
            if not targets[0].queue.offer(envelope):
                return False
            self._stats.published += 1
            return True
        if not targets:
            return False
        for sub in targets:
            if sub.queue.full():
                return False
        self._stats.published += 1
        for tap in taps:
            tap.queue.put_nowait(envelope)
        for sub in targets:
            sub.queue.offer(envelope)
        return True

    async def _publish(self, envelope: Envelope) -> None:
        """Deliver, waiting while a mailbox is full (backpressure)."""
        self._stats.published += 1
        for tap in self._taps:
            await tap.queue.put(envelope)
        if envelope.kind in (Kind.REPLY, Kind.ERROR) and envelope.correlation_id is not None:
            self._resolve(envelope)
            return
        targets = self._targets(envelope.recipient)
        if not targets:
            self._stats.undeliverable += 1
            if envelope.kind is Kind.REQUEST:
                await self._publish(no_route(envelope))
            return
        for sub in targets:
            await sub.queue.put(envelope)

    def _resolve(self, reply: Envelope) -> None:
        future = self._pending.pop(reply.correlation_id or "", None)
        if future is None or future.done():
            self._stats.late_replies_dropped += 1
            return
        future.set_result(reply)

    async def request(self, envelope: Envelope, timeout: float | None = None) -> Envelope:
        if self._closing:
            raise BusClosed("bus is closing; nothing new is accepted")
        if envelope.kind is not _REQUEST:
            raise ValueError(f"request() needs kind=request, got {envelope.kind}")
        if envelope.deadline is None:
            wait = timeout if timeout is not None else DEFAULT_TIMEOUT
        else:
            wait = envelope.remaining() or 0.0
        loop = _get_running_loop()
        future: asyncio.Future[Envelope] = loop.create_future()
        key = envelope.id
        pending = self._pending
        pending[key] = future
        # One heap of deadlines, one timer for the earliest: registering is a push in the common case.
        when = loop.time() + wait
        heap = self._deadlines
        heapq.heappush(heap, (when, next(self._deadline_seq), future))
        if when < self._sweep_at or loop is not self._sweep_loop or len(heap) > 2 * len(pending) + _COMPACT_SLACK:
            self._rearm(loop, when)
        try:
            if not self._publish_nowait(envelope):
                await self._publish(envelope)
            return await future
        except _Expired:
            raise DeadlineExceeded(envelope, wait) from None
        except BaseException:
            if not future.done():
                future.cancel()
            if future.cancelled():
                # Whoever asked stopped waiting (cancelled, or its own deadline ended it): so does the work.
                self.cancel(key)
            raise
        finally:
            if pending.get(key) is future:
                del pending[key]

    def _rearm(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        """A deadline ``when`` was just pushed: time the sweep for it if it is the earliest, else compact."""
        heap = self._deadlines
        if when < self._sweep_at or loop is not self._sweep_loop:
            if self._sweeper is not None:
                self._sweeper.cancel()
            self._sweep_at, self._sweep_loop = when, loop
            self._sweeper = loop.call_at(when, self._sweep, loop)
        elif len(heap) > 2 * len(self._pending) + _COMPACT_SLACK:
            heap[:] = [entry for entry in heap if not entry[2].done()]
            heapq.heapify(heap)

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        """Fail every request whose deadline has passed, drop finished ones, re-arm for the next."""
        self._sweeper = None
        self._sweep_at = math.inf
        heap = self._deadlines
        horizon = loop.time() + _CLOCK_RESOLUTION
        while heap:
            when, _, future = heap[0]
            if future.done():
                heapq.heappop(heap)
            elif when < horizon:
                heapq.heappop(heap)
                future.set_exception(_Expired())
            else:
                self._sweep_at = when
                self._sweeper = loop.call_at(when, self._sweep, loop)
                return

    def stats(self) -> BusStats:
        depth = {
            sub.spec.pattern: sub.queue.qsize() + sub.busy
            for subs in (*self._exact.values(), self._patterns)
            for sub in subs
        }
        return self._stats.snapshot(depth)

    async def close(self, drain_timeout: float = 5.0) -> None:
        if self._closing:
            return
        self._closing = True
        subs = [s for group in self._exact.values() for s in group] + self._patterns
        drains = [asyncio.create_task(s.drain()) for s in subs] + [
            asyncio.create_task(t.queue.join()) for t in self._taps
        ]
        if drains:
            _, pending = await asyncio.wait(drains, timeout=drain_timeout)
            for task in pending:
                task.cancel()
        for sub in subs:
            await sub.stop()
        for tap in list(self._taps):
            await tap.cancel()
        for future in self._pending.values():
            if not future.done():
                future.set_exception(BusClosed("bus closed before the reply arrived"))
        self._pending.clear()
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        self._sweep_at = math.inf
        self._deadlines.clear()
        self._exact.clear()
        self._patterns.clear()
