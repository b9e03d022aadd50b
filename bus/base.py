"""The ``Bus`` interface every transport implements, and the delivery rules they share.

MADs talk only through a bus. The in-memory bus serves one process; the Redis bus
serves several. Both must pass the same contract suite (``tests/bus/contract``), so
everything about *what happens to a message* — contract checks, turning a handler's
exception into an error reply, dropping replies after the deadline — lives here,
and the transports only move envelopes.
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
import re
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, cast

from pydantic import BaseModel

from bus import tracing as _tracing
from bus.contract import Contract
from bus.envelope import Envelope, ErrorInfo, Kind

log = logging.getLogger(__name__)

Handler = Callable[[Envelope], Awaitable[Envelope | None]]
"""Handles one envelope; for a request, the returned envelope is the reply."""

Observer = Callable[[Envelope], Awaitable[None]]
"""Sees every envelope that crosses the bus (the audit trail, test recorders)."""

BatchObserver = Callable[[list[Envelope]], Awaitable[None]]
"""Sees every envelope that crosses the bus, several at a time (Rogers).

The transport counts a batch as seen only once the observer *returns*: on Redis the
tap entries are acknowledged then, so an observer that stores the batch before
returning makes "acknowledged" mean "stored". If it raises, nothing is acknowledged
and the batch is delivered again (see :meth:`Bus.wiretap_batches`).
"""

Gate = Callable[[Envelope], "ErrorInfo | None"]
"""A delivery check every envelope passes before any handler (e.g. McNamara's quarantine).

Returns ``None`` to let the envelope through, or the error to refuse it with.
Gates run in the delivering process, so they work the same on every transport.
"""

DEFAULT_TIMEOUT = 30.0
DEFAULT_MAILBOX = 1024
DEFAULT_CONCURRENCY = 16
"""Handlers of one subscription *working* at once (see :func:`waiting` for those that wait)."""
DEFAULT_WAITING = 1024
"""Handlers of one subscription that may be waiting on I/O at once, on top of the working ones."""
DEFAULT_TAP_BATCH = 128
TAP_ATTEMPTS = 5
"""Deliveries of a batch whose observer keeps raising before a transport gives up on it
(Redis: ``max_deliveries``, then dead letters; in memory: this, then an error log)."""


class BusError(Exception):
    """Base of every bus failure."""


class BusClosed(BusError):
    """The bus is closing or closed: nothing new is accepted."""


class ForgedSender(BusError):
    """An envelope names a sender its publisher may not speak for."""


class BusUnavailable(BusError):
    """The transport's server could not be reached in time (Redis: within ``retry_timeout``)."""


class BusBackpressure(BusError):
    """A queue stayed full for longer than the publisher could wait (Redis: a stream at ``max_len``)."""


class DeadlineExceeded(BusError):
    """No reply arrived before the request's deadline."""

    def __init__(self, envelope: Envelope, seconds: float) -> None:
        super().__init__(f"no reply from {envelope.recipient!r} within {seconds:.3g}s (request {envelope.id})")
        self.envelope = envelope


Redact = Callable[[str], str]
"""Removes known secret values from text (the host passes its redactor to the bus it builds)."""


def verbatim(text: str) -> str:
    """The redactor of a bus nobody gave one: text unchanged."""
    return text


@dataclass(eq=False)
class DeliveryRules:
    """What every delivery on one bus passes through, whatever the transport.

    ``gates`` refuse envelopes before any handler (McNamara's quarantine); ``redact``
    scrubs the text of a handler's exception before it becomes an error reply or a span
    event. Both are given by whoever builds the bus, never swapped in globally.
    """

    gates: list[Gate] = field(default_factory=list)
    redact: Redact = verbatim
    running: dict[str, _Scope] = field(default_factory=dict)
    """Requests being handled in this process, by envelope id: the scope that ends each at its deadline."""
    cancelled: set[str] = field(default_factory=set)
    """Requests whose cancellation was asked for (:meth:`Bus.cancel`): answered ``cancelled``, not dropped."""


def describe_exception(exc: BaseException, redact: Redact = verbatim) -> ErrorInfo:
    """An error reply for a handler that raised: the type and a bounded, scrubbed message."""
    text = redact(str(exc))[:500]
    return ErrorInfo(code="handler_error", message=f"{type(exc).__name__}: {text}" if text else type(exc).__name__)


class BusStats(BaseModel):
    """Counters every transport keeps; exported as metrics."""

    published: int = 0
    delivered: int = 0
    rejected: int = 0
    handler_errors: int = 0
    late_replies_dropped: int = 0
    expired_requests_dropped: int = 0
    undeliverable: int = 0
    cancelled: int = 0
    queue_depth: dict[str, int] = {}


@dataclass(slots=True)
class Counters:
    """The mutable counters behind :class:`BusStats` (a dataclass: bumped on every message)."""

    published: int = 0
    delivered: int = 0
    rejected: int = 0
    handler_errors: int = 0
    late_replies_dropped: int = 0
    expired_requests_dropped: int = 0
    undeliverable: int = 0
    cancelled: int = 0

    def snapshot(self, queue_depth: dict[str, int]) -> BusStats:
        return BusStats(
            published=self.published,
            delivered=self.delivered,
            rejected=self.rejected,
            handler_errors=self.handler_errors,
            late_replies_dropped=self.late_replies_dropped,
            expired_requests_dropped=self.expired_requests_dropped,
            undeliverable=self.undeliverable,
            cancelled=self.cancelled,
            queue_depth=queue_depth,
        )


@dataclass(eq=False)
class SubscriptionSpec:
    """What a subscriber asked for. Shared by transports so matching is identical."""

    pattern: str
    handler: Handler
    group: str
    contract: Contract | None = None
    concurrency: int = DEFAULT_CONCURRENCY
    mailbox: int = DEFAULT_MAILBOX
    waiting: int = DEFAULT_WAITING
    regex: re.Pattern[str] | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        if any(ch in self.pattern for ch in "*?["):
            self.regex = re.compile(fnmatch.translate(self.pattern))

    @property
    def is_pattern(self) -> bool:
        return self.regex is not None

    def matches(self, address: str) -> bool:
        return self.regex.match(address) is not None if self.regex else address == self.pattern


def new_spec(
    pattern: str,
    handler: Handler,
    *,
    group: str | None,
    contract: Contract | None,
    concurrency: int,
    mailbox: int,
    unique: str,
    waiting: int = DEFAULT_WAITING,
) -> SubscriptionSpec:
    """Check ``subscribe()`` arguments and choose the default group, identically on every transport.

    ``unique`` names this subscription within its bus: a glob subscribed without a
    group gets a group of its own (every listener hears every event), an exact
    address defaults to a group named after it (instances of a MAD share its work).
    """
    if concurrency < 1 or mailbox < 1:
        raise ValueError("concurrency and mailbox must be at least 1")
    if waiting < 0:
        raise ValueError("waiting must be at least 0")
    if not pattern:
        raise ValueError("pattern must be a non-empty address or glob")
    spec = SubscriptionSpec(
        pattern=pattern,
        handler=handler,
        group="",
        contract=contract,
        concurrency=concurrency,
        mailbox=mailbox,
        waiting=waiting,
    )
    spec.group = group or (f"{pattern}#{unique}" if spec.is_pattern else pattern)
    return spec


class Slots:
    """The handler slots of one subscription: working handlers and waiting ones, counted apart.

    At most ``spec.concurrency`` handlers *work* at once; a handler that waits on I/O (a reply
    from another MAD, an LLM, a sandbox run) says so with :func:`waiting`, and while it waits
    its slot serves the next envelope. At most ``spec.waiting`` handlers wait at once; past
    that, a waiting handler keeps its slot, so the subscription stops taking work and its
    bounded mailbox pushes back on publishers. A transport calls ``freed`` when a slot becomes
    free because its handler started waiting (to start another worker, or read more).
    """

    __slots__ = ("concurrency", "freed", "limit", "parked")

    def __init__(self, spec: SubscriptionSpec, freed: Callable[[], None]) -> None:
        self.concurrency = spec.concurrency
        self.limit = spec.waiting
        self.parked = 0
        """Handlers waiting now whose slots serve others."""
        self.freed = freed


class Delivery:
    """One handler run's claim on its subscription's slot; nested ``waiting()`` counts once."""

    __slots__ = ("depth", "slots")

    def __init__(self, slots: Slots) -> None:
        self.slots = slots
        self.depth = 0


CURRENT_DELIVERY: ContextVar[Delivery | None] = ContextVar("bus_delivery", default=None)


@contextmanager
def delivering(slots: Slots) -> Iterator[None]:
    """Run a handler as the holder of one of ``slots`` (transports wrap each handler call in this)."""
    token = CURRENT_DELIVERY.set(Delivery(slots))
    try:
        yield
    finally:
        CURRENT_DELIVERY.reset(token)


@contextmanager
def waiting() -> Iterator[None]:
    """The current handler waits on I/O for the duration: its slot serves other envelopes meanwhile.

    ``MadBus.request`` waits this way for every reply, Fiedler for every LLM call. Outside a
    handler, or when the subscription's ``waiting`` bound is reached, nothing changes: the
    handler keeps its slot. Nested and concurrent waits of one handler (``gather``) count once.
    """
    delivery = CURRENT_DELIVERY.get()
    if delivery is None:
        yield
        return
    slots = delivery.slots
    if delivery.depth == 0:
        if slots.parked >= slots.limit:
            yield
            return
        slots.parked += 1
        delivery.depth = 1
        slots.freed()
    else:
        delivery.depth += 1
    try:
        yield
    finally:
        delivery.depth -= 1
        if delivery.depth == 0:
            slots.parked -= 1


class Subscription(ABC):
    """A live subscription; cancel it to stop receiving."""

    spec: SubscriptionSpec

    @abstractmethod
    async def cancel(self) -> None: ...


class Bus(ABC):
    """Publish, subscribe, request/reply with deadlines, wiretap, close."""

    rules: DeliveryRules
    """Set by each transport's constructor (``redact=`` argument); passed to :func:`run_handler`."""

    @property
    def gates(self) -> list[Gate]:
        return self.rules.gates

    def cancel(self, request_id: str) -> bool:
        """Stop handling the request ``request_id`` if this process is handling it.

        Its handler is cancelled where it waits (its own sub-requests are cancelled in turn),
        and the request is answered with ``cancelled``. Returns whether it was running here.
        Transports spanning processes override this to reach every process.
        """
        return cancel_running(self.rules, request_id)

    def has_room(self, address: str) -> bool:
        """Whether a request to ``address`` would be taken without waiting for room (a hint: it may change).

        The gateway answers 503 instead of queueing a person's request behind a full mailbox.
        Transports without bounded mailboxes in this process always say yes.
        """
        return True

    def has_listeners(self, address: str) -> bool:
        """Whether anyone subscribes to ``address`` now (a hint: it may change a moment later).

        The Imperator asks for a streamed LLM answer only if someone listens on the conversation's
        stream topic: streaming costs the LLM client several times the CPU of one answer. Transports
        that cannot tell cheaply (subscribers in other processes) always say yes.
        """
        return True

    def add_gate(self, gate: Gate) -> None:
        self.rules.gates.append(gate)

    def remove_gate(self, gate: Gate) -> None:
        if gate in self.rules.gates:
            self.rules.gates.remove(gate)

    @abstractmethod
    async def start(self) -> None:
        """Connect and begin delivering."""

    @abstractmethod
    async def publish(self, envelope: Envelope) -> None:
        """Send an envelope to every matching subscriber group (waits while mailboxes are full)."""

    @abstractmethod
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
        """Receive envelopes addressed to ``pattern`` (an address, or a glob such as ``events.*``).

        ``concurrency`` handlers work at once, and up to ``waiting`` more may wait on I/O
        (see :func:`waiting`); beyond that envelopes queue in a ``mailbox`` of that size, and
        a full mailbox makes publishers wait (or :meth:`has_room` say no).

        Subscriptions sharing a ``group`` split the traffic (each envelope goes to one
        of them); distinct groups each get a copy. The default group is the pattern
        itself for exact addresses (instances of one MAD share its work) and a unique
        group for patterns (every topic listener gets every event).
        """

    @abstractmethod
    async def request(self, envelope: Envelope, timeout: float | None = None) -> Envelope:
        """Publish a request and wait for its reply or error envelope.

        Raises :class:`DeadlineExceeded` when nothing arrives in time; the
        envelope's own deadline wins over ``timeout``.
        """

    async def wiretap(
        self, observer: Observer, *, mailbox: int = DEFAULT_MAILBOX, group: str | None = None
    ) -> Subscription:
        """Observe every envelope, in publication order, one at a time.

        Taps sharing a ``group`` share one position: across processes, each envelope
        reaches one of them. In one process every tap sees everything. An observer's
        exception is logged and the envelope counts as seen (best effort): an observer
        that must not lose envelopes uses :meth:`wiretap_batches`, which redelivers.
        """
        return await self.wiretap_batches(_each(observer), batch=DEFAULT_TAP_BATCH, mailbox=mailbox, group=group)

    @abstractmethod
    async def wiretap_batches(
        self,
        observer: BatchObserver,
        *,
        batch: int = DEFAULT_TAP_BATCH,
        mailbox: int = DEFAULT_MAILBOX,
        group: str | None = None,
    ) -> Subscription:
        """Observe every envelope in batches of 1..``batch``, in publication order; acknowledge on return.

        Each call gets whatever is waiting, up to ``batch`` envelopes; the transport
        never waits to fill a batch. A batch is acknowledged only after the observer
        returns, so an observer that commits before returning loses nothing when its
        process dies: the unacknowledged batch is delivered again (at least once, so the
        observer must be idempotent). If the observer raises, the batch is not
        acknowledged either: Redis redelivers it once ``reclaim_idle`` has passed (to any
        tap of the group; newer envelopes may be observed first) and dead-letters it
        after ``max_deliveries``; the in-memory bus retries it at once, ahead of newer
        envelopes, up to :data:`TAP_ATTEMPTS` times with a short backoff, then logs and
        drops it (nothing on that bus outlives the process anyway). ``group`` as for
        :meth:`wiretap` (Rogers uses ``group="rogers"`` so a deployment stores each
        message once).
        """

    @abstractmethod
    def stats(self) -> BusStats: ...

    @abstractmethod
    async def close(self, drain_timeout: float = 5.0) -> None:
        """Refuse new work, let in-flight work finish (up to ``drain_timeout``), then stop."""

    async def __aenter__(self) -> Bus:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def run_handler(
    spec: SubscriptionSpec,
    envelope: Envelope,
    stats: Counters,
    rules: DeliveryRules | None = None,
    *,
    observed: bool = False,
    task: asyncio.Task[Any] | None = None,
) -> Envelope | None:
    """Deliver one envelope to a handler under the shared rules.

    Returns the envelope to send back (reply or error) for a request, else ``None``.
    A handler's exception becomes an error reply, never a dead bus. With telemetry on,
    the delivery runs inside a span continuing the envelope's trace (``observed`` marks
    the inner call); with it off, the flag check is all it costs. ``task`` is the task
    running this call, if the caller knows it (a transport's worker), to save looking it up.
    """
    if _tracing.ACTIVE and not observed:
        return await _tracing.observe(spec, envelope, stats, rules, run_handler)
    if rules is None:
        rules = _NO_RULES
    is_request = envelope.kind is _REQUEST
    deadline = envelope.deadline
    if is_request and deadline is not None and envelope.expired():
        stats.expired_requests_dropped += 1
        return None
    for gate in rules.gates:
        refusal = gate(envelope)
        if refusal is not None:
            stats.rejected += 1
            if _tracing.ACTIVE:
                _tracing.record_refusal(refusal)
            return envelope.error_reply(refusal, sender=_sender_for(spec, envelope)) if is_request else None
    if spec.contract is not None:
        problem = spec.contract.check(envelope)
        if problem is not None:
            stats.rejected += 1
            if _tracing.ACTIVE:
                _tracing.record_refusal(problem)
            return envelope.error_reply(problem, sender=_sender_for(spec, envelope)) if is_request else None
    stats.delivered += 1
    if not is_request:
        try:
            await spec.handler(envelope)
        except Exception as exc:
            _handler_failed(spec, envelope, exc, stats, rules)
        return None
    # A request runs in a scope that ends it at its deadline, or when it is cancelled (Bus.cancel).
    if task is None:
        task = cast("asyncio.Task[Any]", _current_task())
    scope = _Scope(task)
    key = envelope.id
    running = rules.running
    running[key] = scope
    cancelling = task.cancelling()
    if deadline is not None:
        scope.timer = _get_running_loop().call_later(envelope.remaining() or 0.0, scope.end)
    try:
        result = await spec.handler(envelope)
    except asyncio.CancelledError:
        if not scope.ended or task.uncancel() > cancelling:
            raise  # not ours to absorb: whoever else cancelled the task still wants it to stop
        return _ended(spec, envelope, stats, rules)
    except Exception as exc:
        if scope.ended and task.uncancel() <= cancelling:
            return _ended(spec, envelope, stats, rules)  # the handler turned our cancellation into an error
        _handler_failed(spec, envelope, exc, stats, rules)
        return envelope.error_reply(describe_exception(exc, rules.redact), sender=_sender_for(spec, envelope))
    finally:
        if scope.timer is not None:
            scope.timer.cancel()
        if running.get(key) is scope:
            del running[key]
    if scope.ended:  # the handler finished anyway: the cancellation is spent
        task.uncancel()
        rules.cancelled.discard(key)
    if result is None:
        return envelope.error_reply(
            ErrorInfo(code="no_reply", message=f"{envelope.recipient} produced no reply"),
            sender=_sender_for(spec, envelope),
        )
    if deadline is not None and envelope.expired():
        stats.late_replies_dropped += 1
        return None
    if not _answers(result, envelope, spec):
        stats.rejected += 1
        log.error("handler for %s returned a reply that does not answer %s; refused", spec.pattern, envelope.id)
        return envelope.error_reply(
            ErrorInfo(code="forged_reply", message=f"{envelope.recipient} answered with a reply that is not its own"),
            sender=_sender_for(spec, envelope),
        )
    return result


def _handler_failed(
    spec: SubscriptionSpec, envelope: Envelope, exc: Exception, stats: Counters, rules: DeliveryRules
) -> None:
    stats.handler_errors += 1
    if _tracing.ACTIVE:
        _tracing.record_exception(exc, rules.redact)
    log.warning("handler for %s failed on %s: %s", spec.pattern, envelope.id, type(exc).__name__)


_current_task = asyncio.current_task
_REQUEST = Kind.REQUEST
_get_running_loop = asyncio.get_running_loop


class _Scope:
    """One request being handled: :meth:`end` stops its handler (deadline passed, or cancelled).

    What ``asyncio.timeout_at`` would do, without an ``async with`` per request or a timer
    for requests that have no deadline: ``end`` cancels the handler's task, and
    :func:`run_handler` absorbs exactly that cancellation (``Task.uncancel``), so a
    cancellation from anyone else still propagates.
    """

    __slots__ = ("ended", "task", "timer")

    def __init__(self, task: asyncio.Task[Any]) -> None:
        self.task = task
        self.timer: asyncio.TimerHandle | None = None
        self.ended = False

    def end(self) -> None:
        if not self.ended:
            self.ended = True
            self.task.cancel()


def _ended(spec: SubscriptionSpec, envelope: Envelope, stats: Counters, rules: DeliveryRules) -> Envelope | None:
    """The outcome of a request whose handler was stopped: ``cancelled`` if asked for, else dropped (deadline)."""
    if envelope.id in rules.cancelled:
        rules.cancelled.discard(envelope.id)
        stats.cancelled += 1
        return envelope.error_reply(
            ErrorInfo(code="cancelled", message=f"the request to {envelope.recipient} was cancelled"),
            sender=_sender_for(spec, envelope),
        )
    stats.expired_requests_dropped += 1
    return None


def cancel_running(rules: DeliveryRules, request_id: str) -> bool:
    scope = rules.running.get(request_id)
    if scope is None or scope.ended:
        return False
    rules.cancelled.add(request_id)
    scope.end()
    return True


def _answers(reply: Envelope, request: Envelope, spec: SubscriptionSpec) -> bool:
    """A reply comes from the request's recipient, answers that request and serves the same principal."""
    return (
        reply.correlation_id == request.id
        and (reply.kind is Kind.REPLY or reply.kind is Kind.ERROR)
        and (reply.sender == request.recipient or reply.sender == _sender_for(spec, request))
        and (reply.principal is request.principal or reply.principal == request.principal)
    )


_NO_RULES = DeliveryRules()


def _each(observer: Observer) -> BatchObserver:
    """A batch observer feeding ``observer`` one envelope at a time; a failure is logged, not raised."""

    async def observe(batch: list[Envelope]) -> None:
        for envelope in batch:
            try:
                await observer(envelope)
            except Exception:
                log.exception("wiretap observer failed on %s", envelope.id)

    return observe


def check_tap_args(batch: int, mailbox: int) -> None:
    if batch < 1:
        raise ValueError(f"batch must be at least 1 (got {batch})")
    if mailbox < 1:
        raise ValueError(f"mailbox must be at least 1 (got {mailbox})")


def _sender_for(spec: SubscriptionSpec, envelope: Envelope) -> str:
    return envelope.recipient if not spec.is_pattern else "bus"


def no_route(envelope: Envelope) -> Envelope:
    """The error reply for a request nobody is subscribed to."""
    return envelope.error_reply(
        ErrorInfo(
            code="no_route",
            message=f"{envelope.recipient!r} is not running: nothing on this bus serves it",
        ),
        sender="bus",
    )
