"""Trace context across bus hops, on every transport: spans in run_handler, parents from the envelope.

Each test uses its own ``TracerProvider`` with an in-memory exporter (never the global
one), so test order does not matter.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from pydantic import BaseModel, ConfigDict

from bus import tracing
from bus.base import Bus
from bus.contract import Contract
from bus.envelope import CommandPart, DataPart, Envelope, Kind, ProsePart, deadline_in, parse_envelope
from bus.memory import InMemoryBus

TIMEOUT = 10.0


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.enable_tracing(provider)
    try:
        yield exporter
    finally:
        tracing.disable_tracing()
        provider.shutdown()


def request(sender: str, recipient: str, *parts: CommandPart | ProsePart | DataPart) -> Envelope:
    return Envelope(
        sender=sender,
        recipient=recipient,
        kind=Kind.REQUEST,
        conversation_id="conv-t",
        deadline=deadline_in(TIMEOUT),
        trace=tracing.current_trace(),
        content=list(parts) or [CommandPart(tool="ping")],
    )


def by_name(exporter: InMemorySpanExporter) -> dict[str, ReadableSpan]:
    return {span.name: span for span in exporter.get_finished_spans()}


async def test_a_request_chain_is_one_trace_with_parents_across_hops(bus: Bus, spans: InMemorySpanExporter) -> None:
    async def b(envelope: Envelope) -> Envelope:
        reply = await bus.request(request("b", "c", CommandPart(tool="lookup", arguments={"k": 1})))
        return envelope.reply(*reply.content)

    async def c(envelope: Envelope) -> Envelope:
        return envelope.reply(DataPart(value="found"))

    await bus.subscribe("b", b)
    await bus.subscribe("c", c)
    with tracing.span("client", kind=SpanKind.CLIENT) as root:
        assert root is not None
        reply = await bus.request(request("a", "b", CommandPart(tool="fetch"), CommandPart(tool="fetch_more")))
    assert reply.data() == ["found"]
    assert reply.trace is not None, "a reply keeps the request's trace context"

    found = by_name(spans)
    client, handle_b, handle_c = found["client"], found["handle b"], found["handle c"]
    assert {s.context.trace_id for s in (client, handle_b, handle_c)} == {client.context.trace_id}
    assert handle_b.parent is not None and handle_b.parent.span_id == client.context.span_id
    assert handle_c.parent is not None and handle_c.parent.span_id == handle_b.context.span_id
    assert handle_b.kind is SpanKind.SERVER
    attributes = dict(handle_b.attributes or {})
    assert attributes["messaging.system"] == "mad-bus"
    assert attributes["messaging.destination.name"] == "b"
    assert attributes["messaging.message.conversation_id"] == "conv-t"
    assert attributes["mad.sender"] == "a"
    assert attributes["mad.tools"] == ("fetch", "fetch_more")
    assert len(str(attributes["messaging.message.id"])) == 32
    assert dict(handle_c.attributes or {})["mad.tools"] == ("lookup",)


async def test_trace_context_survives_json_serialisation(spans: InMemorySpanExporter) -> None:
    with tracing.span("sender") as sender:
        assert sender is not None
        envelope = request("a", "b")
    assert envelope.trace is not None
    parsed = parse_envelope(envelope.model_dump_json())
    assert parsed.trace == envelope.trace
    bus = InMemoryBus()
    await bus.start()
    await bus.subscribe("b", lambda e: _reply(e))
    await bus.request(parsed)
    await bus.close()
    handle = by_name(spans)["handle b"]
    assert handle.parent is not None
    assert handle.parent.trace_id == sender.get_span_context().trace_id
    assert handle.parent.span_id == sender.get_span_context().span_id


async def _reply(envelope: Envelope) -> Envelope:
    return envelope.reply(DataPart(value=None))


async def test_handler_errors_are_recorded_on_the_span_without_secrets(bus: Bus, spans: InMemorySpanExporter) -> None:
    async def broken(envelope: Envelope) -> Envelope:
        raise ValueError("database password hunter2-secret leaked")

    # What the host does by building the bus with ``redact=`` (its redactor), here on the fixture's bus.
    bus.rules.redact = lambda text: text.replace("hunter2-secret", "[REDACTED]")
    await bus.subscribe("broken", broken)
    reply = await bus.request(request("a", "broken"))
    assert reply.kind is Kind.ERROR
    span = by_name(spans)["handle broken"]
    assert span.status.status_code is StatusCode.ERROR
    assert dict(span.attributes or {})["error.type"] == "handler_error"
    (event,) = [e for e in span.events if e.name == "exception"]
    event_attributes = dict(event.attributes or {})
    assert event_attributes["exception.type"] == "ValueError"
    assert "[REDACTED]" in str(event_attributes["exception.message"])
    assert "hunter2-secret" not in str(event_attributes["exception.message"])
    assert "hunter2-secret" not in str(event_attributes["exception.stacktrace"])


class StrictArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    n: int


async def test_a_rejected_request_marks_its_span(bus: Bus, spans: InMemorySpanExporter) -> None:
    await bus.subscribe("strict", _reply, contract=Contract({"count": StrictArgs}, accepts_prose=False))
    reply = await bus.request(request("a", "strict", CommandPart(tool="count", arguments={"n": "many"})))
    assert reply.kind is Kind.ERROR and reply.error is not None
    span = by_name(spans)["handle strict"]
    assert span.status.status_code is StatusCode.ERROR
    assert dict(span.attributes or {})["error.type"] == reply.error.code


async def test_events_are_consumer_spans_and_stream_deltas_are_not_traced(spans: InMemorySpanExporter) -> None:
    bus = InMemoryBus()
    await bus.start()
    seen: list[str] = []

    async def record(envelope: Envelope) -> None:
        seen.append(envelope.recipient)

    await bus.subscribe("events.*", record)
    await bus.subscribe("stream.*", record)
    with tracing.span("emitter"):
        for topic in ("events.thing", "stream.conv-1"):
            await bus.publish(
                Envelope(
                    sender="a",
                    recipient=topic,
                    kind=Kind.EVENT,
                    trace=tracing.current_trace(),
                    content=[DataPart(value=1)],
                )
            )
    await bus.close()
    assert sorted(seen) == ["events.thing", "stream.conv-1"]
    found = by_name(spans)
    assert found["handle events.thing"].kind is SpanKind.CONSUMER
    assert "handle stream.conv-1" not in found


async def test_disabled_tracing_adds_nothing(bus: Bus) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    assert not tracing.TRACING
    assert tracing.span("nothing").__enter__() is None

    async def b(envelope: Envelope) -> Envelope:
        inner = request("b", "c")
        assert inner.trace is None
        return envelope.reply(*(await bus.request(inner)).content)

    await bus.subscribe("b", b)
    await bus.subscribe("c", _reply)
    with provider.get_tracer("test").start_as_current_span("outside the bus"):
        envelope = request("a", "b")
        assert envelope.trace is None, "no trace context is injected while tracing is off"
        reply = await bus.request(envelope)
    assert reply.kind is Kind.REPLY and reply.trace is None
    assert [s.name for s in exporter.get_finished_spans()] == ["outside the bus"]


def test_an_oversized_tracestate_is_dropped_and_the_traceparent_kept(spans: InMemorySpanExporter) -> None:
    from opentelemetry import trace
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, TraceState

    state = TraceState([(f"vendor{i}", "x" * 40) for i in range(20)])
    remote = SpanContext(0x1111, 0x2222, is_remote=True, trace_flags=TraceFlags(1), trace_state=state)
    with trace.use_span(NonRecordingSpan(remote)), tracing.span("child"):
        carried = tracing.current_trace()
    assert carried is not None
    assert carried.traceparent.split("-")[1] == format(0x1111, "032x")
    assert carried.tracestate is None

    short = SpanContext(0x1111, 0x2222, is_remote=True, trace_flags=TraceFlags(1), trace_state=TraceState([("v", "1")]))
    with trace.use_span(NonRecordingSpan(short)):
        small = tracing.current_trace()
    assert small is not None and small.tracestate == "v=1"
