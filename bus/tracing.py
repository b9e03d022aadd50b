"""Distributed tracing across bus hops (W3C trace context in :attr:`Envelope.trace`).

A sender copies its current span context into the envelope it builds
(:func:`current_trace`); the receiving side — :func:`bus.base.run_handler`, shared by
every transport — starts a span whose parent is that context (:func:`observe`). So a
request that goes gateway → grace → fiedler → LLM is one trace, in one process or
across several on Redis (the context is plain JSON in the envelope).

Off by default and then free: the delivery path reads one module flag (:data:`ACTIVE`)
and touches nothing of OpenTelemetry. :mod:`mads.core.telemetry` turns it on with a tracer
provider; tests pass their own provider, so the process-wide one is never needed here.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Protocol

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer, TracerProvider
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import AttributeValue

from bus import metrics
from bus.envelope import CommandPart, Envelope, ErrorInfo, Kind, TraceContext

if TYPE_CHECKING:
    from bus.base import Counters, DeliveryRules, SubscriptionSpec

TRACER_NAME = "mad-bus"
MESSAGING_SYSTEM = "mad-bus"
UNTRACED_PREFIXES = ("stream.",)
"""Topics not worth a span per message: streamed deltas arrive once per token."""
MAX_TRACESTATE = 512
"""What :class:`TraceContext` accepts; a longer tracestate is dropped (the traceparent is what links spans)."""

ACTIVE = False
"""Tracing or delivery metrics are on: the one thing :func:`bus.base.run_handler` checks per message."""
TRACING = False
_tracer: Tracer | None = None
_propagator = TraceContextTextMapPropagator()


class Deliver(Protocol):
    """:func:`bus.base.run_handler`, called back without observation."""

    def __call__(
        self,
        spec: SubscriptionSpec,
        envelope: Envelope,
        stats: Counters,
        rules: DeliveryRules | None = None,
        *,
        observed: bool = False,
    ) -> Awaitable[Envelope | None]: ...


def enable_tracing(provider: TracerProvider | None = None) -> None:
    """Start tracing deliveries with ``provider`` (default: the process-wide one)."""
    global TRACING, _tracer
    _tracer = (provider or trace.get_tracer_provider()).get_tracer(TRACER_NAME)
    TRACING = True
    refresh()


def disable_tracing() -> None:
    global TRACING, _tracer
    TRACING = False
    _tracer = None
    refresh()


def refresh() -> None:
    """Recompute :data:`ACTIVE` after tracing or delivery metrics were switched."""
    global ACTIVE
    ACTIVE = TRACING or metrics.ENABLED


metrics.on_toggle(refresh)


def current_trace() -> TraceContext | None:
    """The current span context for an envelope being built, or ``None`` (tracing off, or no span)."""
    if not TRACING:
        return None
    if not trace.get_current_span().get_span_context().is_valid:
        return None
    carrier: dict[str, str] = {}
    _propagator.inject(carrier)
    state = carrier.get("tracestate") or None
    return TraceContext(
        traceparent=carrier["traceparent"], tracestate=state if state and len(state) <= MAX_TRACESTATE else None
    )


def parent_context(envelope: Envelope) -> Context | None:
    """The span context carried by ``envelope`` (``None``: start a new trace)."""
    carried = envelope.trace
    if carried is None:
        return None
    carrier = {"traceparent": carried.traceparent}
    if carried.tracestate:
        carrier["tracestate"] = carried.tracestate
    return _propagator.extract(carrier)


def delivery_attributes(envelope: Envelope) -> dict[str, AttributeValue]:
    """Messaging semantic-convention attributes of one delivery (plus the MAD-specific ones)."""
    attributes: dict[str, AttributeValue] = {
        "messaging.system": MESSAGING_SYSTEM,
        "messaging.operation.type": "process",
        "messaging.operation.name": "handle",
        "messaging.destination.name": envelope.recipient,
        "messaging.message.id": envelope.id,
        "mad.sender": envelope.sender,
        "mad.kind": envelope.kind.value,
    }
    if envelope.conversation_id is not None:
        attributes["messaging.message.conversation_id"] = envelope.conversation_id
    if envelope.correlation_id is not None:
        attributes["mad.correlation_id"] = envelope.correlation_id
    tools = [part.tool for part in envelope.content if isinstance(part, CommandPart)]
    if tools:
        attributes["mad.tools"] = tools
    return attributes


async def observe(
    spec: SubscriptionSpec, envelope: Envelope, stats: Counters, rules: DeliveryRules | None, deliver: Deliver
) -> Envelope | None:
    """Run one delivery inside a span (child of the envelope's trace) and time it for the latency histogram."""
    tracer = _tracer if TRACING and not envelope.recipient.startswith(UNTRACED_PREFIXES) else None
    timed = metrics.ENABLED and envelope.kind is Kind.REQUEST
    started = time.perf_counter() if timed else 0.0
    if tracer is None:
        result = await deliver(spec, envelope, stats, rules, observed=True)
    else:
        with tracer.start_as_current_span(
            f"handle {envelope.recipient}",
            context=parent_context(envelope),
            kind=SpanKind.SERVER if envelope.kind is Kind.REQUEST else SpanKind.CONSUMER,
            attributes=delivery_attributes(envelope),
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            result = await deliver(spec, envelope, stats, rules, observed=True)
            if result is not None and result.kind is Kind.ERROR and result.error is not None:
                _mark_error(span, result.error.code)
    if timed:
        metrics.record_request(envelope.recipient, _outcome(result), time.perf_counter() - started)
    return result


def _outcome(result: Envelope | None) -> str:
    if result is None:
        return "dropped"
    if result.kind is Kind.ERROR:
        error = result.error
        return error.code if error is not None else "error"
    return "ok"


def _mark_error(span: Span, code: str) -> None:
    span.set_status(Status(StatusCode.ERROR, code))
    span.set_attribute("error.type", code)


def record_exception(exc: BaseException, scrub: Callable[[str], str]) -> None:
    """Put a handler's exception on the current delivery span, scrubbed like the error reply."""
    span = trace.get_current_span()
    if not span.is_recording():
        return
    stack = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    span.add_event(
        "exception",
        {
            "exception.type": type(exc).__qualname__,
            "exception.message": scrub(str(exc))[:500],
            "exception.stacktrace": scrub(stack)[:8000],
        },
    )
    _mark_error(span, type(exc).__qualname__)


def record_refusal(error: ErrorInfo) -> None:
    """A gate or contract refused the envelope (for events there is no error reply to see it by)."""
    span = trace.get_current_span()
    if span.is_recording():
        _mark_error(span, error.code)


@contextmanager
def span(
    name: str, *, kind: SpanKind = SpanKind.INTERNAL, attributes: Mapping[str, AttributeValue] | None = None
) -> Iterator[Span | None]:
    """A span around work that starts outside the bus (the gateway's HTTP requests); ``None`` when off."""
    tracer = _tracer
    if not TRACING or tracer is None:
        yield None
        return
    with tracer.start_as_current_span(name, kind=kind, attributes=attributes) as current:
        yield current


__all__ = [
    "ACTIVE",
    "TRACER_NAME",
    "current_trace",
    "delivery_attributes",
    "disable_tracing",
    "enable_tracing",
    "observe",
    "parent_context",
    "record_exception",
    "record_refusal",
    "span",
]
