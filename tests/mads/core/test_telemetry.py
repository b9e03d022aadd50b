"""Process telemetry with real MADs on the real InMemoryBus: traces across hops down to the LLM call,
metrics after real traffic, Prometheus text, OTLP export over loopback HTTP, JSON logs through the redactor."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from aiohttp import web
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, MetricsData
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from pydantic import BaseModel, ConfigDict, JsonValue

from bus import tracing
from bus.envelope import CommandPart, Envelope, Kind, ProsePart, deadline_in
from bus.memory import InMemoryBus
from bus.topics import LLM_CALL, VALIDATION_FAILURE
from mads.core import telemetry
from mads.core.base import MAD, MadContext
from mads.core.redaction import SecretRedactor
from mads.core.settings import ConfigError, TelemetrySection, load_settings
from mads.core.telemetry import JsonFormatter, Telemetry, configure_logging
from mads.core.tools import Call, tool
from tests.mads.fiedler.harness import KEY_ENV, SECRET_KEY, config, ecosystem
from tests.support.llm_server import Reply, ScriptedLLM, ToolCall

DEADLINE = 30.0


class NoArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CountArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    n: int


class Alpha(MAD):
    name = "alpha"
    description = "Asks beta."

    @tool("Ask beta, which asks gamma.")
    async def relay(self, args: NoArgs, call: Call) -> JsonValue:
        return await self.call("beta", "relay", conversation_id=call.conversation_id)


class Beta(MAD):
    name = "beta"
    description = "Asks gamma."

    @tool("Ask gamma.")
    async def relay(self, args: NoArgs, call: Call) -> JsonValue:
        return await self.call("gamma", "count", {"n": 3}, conversation_id=call.conversation_id)


class Gamma(MAD):
    name = "gamma"
    description = "Counts."

    @tool("Count to n.")
    async def count(self, args: CountArgs) -> JsonValue:
        logging.getLogger("tests.gamma").info("counting to %d", args.n, extra={"mad": "gamma"})
        return list(range(args.n))


@pytest.fixture
def spans() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
async def started(spans: InMemorySpanExporter) -> AsyncIterator[tuple[Telemetry, InMemoryMetricReader]]:
    """Telemetry with tracing and metrics on, exporting to memory (no OTLP endpoint)."""
    reader = InMemoryMetricReader()
    section = TelemetrySection(traces=True, event_metrics=True)
    tele = Telemetry(
        section, instance="test", extra_span_processors=[SimpleSpanProcessor(spans)], extra_metric_readers=[reader]
    )
    yield tele, reader
    await tele.stop()


@pytest.fixture(autouse=True)
def api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, SECRET_KEY)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)


def request(recipient: str, *parts: CommandPart | ProsePart, conversation_id: str = "conv-tel") -> Envelope:
    return Envelope(
        sender="tester",
        recipient=recipient,
        kind=Kind.REQUEST,
        conversation_id=conversation_id,
        deadline=deadline_in(DEADLINE),
        trace=tracing.current_trace(),
        content=list(parts),
    )


def in_trace(exporter: InMemorySpanExporter, trace_id: int) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.context.trace_id == trace_id]


def parent_of(span: ReadableSpan, spans: list[ReadableSpan]) -> ReadableSpan:
    assert span.parent is not None, f"{span.name} has no parent"
    (parent,) = [s for s in spans if s.context.span_id == span.parent.span_id]
    return parent


def values(data: MetricsData | None, name: str) -> dict[frozenset[tuple[str, object]], float]:
    """Data points of one metric, keyed by their attributes."""
    out: dict[frozenset[tuple[str, object]], float] = {}
    for rm in data.resource_metrics if data else ():
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                if metric.name == name:
                    for point in metric.data.data_points:
                        out[frozenset((point.attributes or {}).items())] = getattr(point, "value", None) or getattr(
                            point, "count", 0
                        )
    return out


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    root = logging.getLogger()
    before = (list(root.handlers), root.level)
    yield stream
    for handler in list(root.handlers):
        if handler not in before[0]:
            root.removeHandler(handler)
    root.setLevel(before[1])


async def test_three_mads_make_one_trace_and_metrics(
    tmp_path: Path,
    started: tuple[Telemetry, InMemoryMetricReader],
    spans: InMemorySpanExporter,
    log_stream: io.StringIO,
) -> None:
    tele, reader = started
    redactor = SecretRedactor()
    configure_logging("INFO", json_logs=True, stream=log_stream, redactor=redactor)
    bus = InMemoryBus()
    await bus.start()
    await tele.start(bus)
    mads = [cls(MadContext(bus=bus, data_dir=tmp_path)) for cls in (Alpha, Beta, Gamma)]
    for mad in mads:
        await mad.start()

    async def listener(envelope: Envelope) -> None:
        return None

    await bus.subscribe("events.*", listener)
    with tracing.span("gateway POST /mads/alpha", kind=SpanKind.SERVER) as root:
        assert root is not None
        reply = await bus.request(request("alpha", CommandPart(tool="relay")))
        bad = await bus.request(request("gamma", CommandPart(tool="count", arguments={"n": "many"})))
    assert reply.data() == [[0, 1, 2]]
    assert bad.kind is Kind.ERROR
    live = telemetry.prometheus_text()
    assert "# TYPE mad_bus_queue_depth gauge" in live
    assert 'mad_bus_queue_depth{bus="main",destination="alpha"} 0' in live
    await bus.close()

    trace_id = root.get_span_context().trace_id
    spans_in_trace = in_trace(spans, trace_id)
    names = sorted(s.name for s in spans_in_trace)
    assert names.count("handle alpha") == 1 and names.count("handle beta") == 1 and names.count("handle gamma") == 2
    alpha = next(s for s in spans_in_trace if s.name == "handle alpha")
    beta = next(s for s in spans_in_trace if s.name == "handle beta")
    root_id = root.get_span_context().span_id
    gamma = next(s for s in spans_in_trace if s.name == "handle gamma" and s.parent and s.parent.span_id != root_id)
    assert parent_of(alpha, spans_in_trace).name == "gateway POST /mads/alpha"
    assert parent_of(beta, spans_in_trace) is alpha
    assert parent_of(gamma, spans_in_trace) is beta
    assert dict(gamma.attributes or {})["mad.sender"] == "beta"
    tool_events = [s for s in spans_in_trace if s.name == "handle events.tool_call"]
    assert {parent_of(s, spans_in_trace).name for s in tool_events} == {"handle alpha", "handle beta", "handle gamma"}
    assert all(s.kind is SpanKind.CONSUMER for s in tool_events), "events emitted inside a handler continue its trace"

    lines = [json.loads(line) for line in log_stream.getvalue().splitlines()]
    (counting,) = [line for line in lines if line["message"] == "counting to 3"]
    assert counting["trace_id"] == format(trace_id, "032x")
    assert counting["span_id"] == format(gamma.context.span_id, "016x")
    assert counting["logger"] == "tests.gamma" and counting["level"] == "INFO" and counting["mad"] == "gamma"

    data = reader.get_metrics_data()
    published = values(data, "mad.bus.messages.published")
    assert published[frozenset({("bus", "main")})] >= 6
    assert values(data, "mad.bus.messages.rejected")[frozenset({("bus", "main")})] == 1
    durations = values(data, "mad.bus.request.duration")
    assert durations[frozenset({("destination", "alpha"), ("outcome", "ok")})] == 1
    assert durations[frozenset({("destination", "gamma"), ("outcome", "invalid_arguments")})] == 1

    text = telemetry.prometheus_text()
    assert "# TYPE mad_bus_messages_rejected_total counter" in text
    assert 'mad_bus_messages_rejected_total{bus="main"} 1' in text
    assert 'mad_bus_request_duration_seconds_count{destination="alpha",outcome="ok"} 1' in text
    assert 'mad_bus_request_duration_seconds_bucket{destination="alpha",le="+Inf",outcome="ok"} 1' in text
    for mad in mads:
        await mad.stop()


async def test_llm_spans_are_children_of_bus_hops_and_feed_metrics(
    tmp_path: Path,
    llm_server: ScriptedLLM,
    started: tuple[Telemetry, InMemoryMetricReader],
    spans: InMemorySpanExporter,
) -> None:
    tele, reader = started
    llm_server.script(
        ToolCall(name="shelve", arguments={"title": "x"}),
        ToolCall(name="search", arguments={"query": "whales"}),
        Reply(text="Three whale books."),
    )
    async with ecosystem(tmp_path, config(llm_server)) as eco:
        await tele.start(eco.bus)
        with tracing.span("gateway POST /chat", kind=SpanKind.SERVER) as root:
            assert root is not None
            reply = await eco.bus.request(request("librarian", ProsePart(text="whales please")))
        assert reply.text() == "Three whale books."
        await eco.events.wait_count(LLM_CALL, 3)
        await eco.events.wait_count(VALIDATION_FAILURE, 1)
    # The harness closed the bus: every mailbox (the telemetry subscriptions' too) has drained.

    spans_in_trace = in_trace(spans, root.get_span_context().trace_id)
    librarian = next(s for s in spans_in_trace if s.name == "handle librarian")
    llm_spans = [s for s in spans_in_trace if s.name == "chat scripted"]
    assert len(llm_spans) == 3
    for llm in llm_spans:
        assert llm.kind is SpanKind.CLIENT
        hop = parent_of(llm, spans_in_trace)
        assert hop.name == "handle fiedler" and dict(hop.attributes or {})["mad.tools"] == ("chat",)
        assert parent_of(hop, spans_in_trace) is librarian
        attributes = dict(llm.attributes or {})
        assert attributes["gen_ai.request.model"] == "scripted"
        assert attributes["gen_ai.usage.input_tokens"] > 0
    assert parent_of(librarian, spans_in_trace).name == "gateway POST /chat"

    data = reader.get_metrics_data()
    tokens = values(data, "mad.llm.tokens")
    expected_input = sum(dict(s.attributes or {})["gen_ai.usage.input_tokens"] for s in llm_spans)
    assert tokens[frozenset({("model", "main"), ("caller", "librarian"), ("token_type", "input")})] == expected_input
    calls = values(data, "mad.llm.calls")
    assert calls[frozenset({("model", "main"), ("caller", "librarian"), ("outcome", "ok")})] == 3
    failures = values(data, "mad.validation.failures")
    assert failures == {frozenset({("mad", "librarian"), ("problem", "unknown_tool"), ("source", "llm")}): 1}
    text = telemetry.prometheus_text()
    assert f'mad_llm_tokens_total{{caller="librarian",model="main",token_type="input"}} {expected_input}' in text
    assert 'mad_validation_failures_total{mad="librarian",problem="unknown_tool",source="llm"} 1' in text


async def test_rate_limit_hits_are_counted_and_rendered(started: tuple[Telemetry, InMemoryMetricReader]) -> None:
    tele, _ = started
    bus = InMemoryBus()
    await bus.start()
    await tele.start(bus)
    telemetry.record_rate_limit_hit("ip")
    telemetry.record_rate_limit_hit("ip")
    telemetry.record_rate_limit_hit("token")
    text = telemetry.prometheus_text()
    await bus.close()
    assert 'mad_gateway_rate_limit_hits_total{scope="ip"} 2' in text
    assert 'mad_gateway_rate_limit_hits_total{scope="token"} 1' in text


async def test_nothing_is_traced_or_injected_without_configuration(tmp_path: Path) -> None:
    tele = Telemetry(TelemetrySection(), instance="plain")
    bus = InMemoryBus()
    await bus.start()
    await tele.start(bus)
    try:
        assert not tele.traces and not tracing.TRACING
        mads = [cls(MadContext(bus=bus, data_dir=tmp_path)) for cls in (Alpha, Beta, Gamma)]
        for mad in mads:
            await mad.start()
        seen: list[Envelope] = []

        async def tap(envelope: Envelope) -> None:
            seen.append(envelope)

        await bus.wiretap(tap)
        reply = await bus.request(request("alpha", CommandPart(tool="relay")))
        assert reply.data() == [[0, 1, 2]]
        await bus.close()
        assert len(seen) >= 6 and all(e.trace is None for e in seen)
        assert "mad_bus_messages_published_total" in telemetry.prometheus_text(), "metrics stay on by default"
        for mad in mads:
            await mad.stop()
    finally:
        await tele.stop()
    assert telemetry.prometheus_text() == ""


class OTLPReceiver:
    """A loopback OTLP/HTTP collector: records each POST's path and body."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, bytes]] = []
        self.arrived = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        self.posts.append((request.path, await request.read()))
        self.arrived.set()
        return web.Response(status=200, content_type="application/x-protobuf", body=b"")


async def test_spans_and_metrics_are_exported_over_otlp_http(tmp_path: Path) -> None:
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    receiver = OTLPReceiver()
    app = web.Application()
    app.router.add_post("/v1/traces", receiver.handle)
    app.router.add_post("/v1/metrics", receiver.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        tele = Telemetry(
            TelemetrySection(otlp_endpoint=f"http://127.0.0.1:{port}", service_name="otlp-test"), instance="otlp"
        )
        assert tele.traces, "an endpoint switches tracing on"
        bus = InMemoryBus()
        await bus.start()
        await tele.start(bus)
        gamma = Gamma(MadContext(bus=bus, data_dir=tmp_path))
        await gamma.start()
        with tracing.span("client"):
            await bus.request(request("gamma", CommandPart(tool="count", arguments={"n": 1})))
        await bus.close()
        await gamma.stop()
        await tele.stop()  # flushes both exporters (in a thread: the exporter's HTTP is blocking)
    finally:
        await runner.cleanup()
    paths = {path for path, _ in receiver.posts}
    assert paths == {"/v1/traces", "/v1/metrics"}
    exported_spans = []
    for path, body in receiver.posts:
        if path == "/v1/traces":
            parsed = ExportTraceServiceRequest.FromString(body)
            for rs in parsed.resource_spans:
                # The process-wide provider keeps the resource of the first start in the process.
                assert {a.key for a in rs.resource.attributes} >= {"service.name", "service.instance.id"}
                exported_spans += [s.name for ss in rs.scope_spans for s in ss.spans]
    assert "handle gamma" in exported_spans and "client" in exported_spans
    metric_names = {
        m.name
        for path, body in receiver.posts
        if path == "/v1/metrics"
        for rm in ExportMetricsServiceRequest.FromString(body).resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
    }
    assert {"mad.bus.messages.published", "mad.bus.request.duration"} <= metric_names


def test_json_logs_redact_registered_secrets_everywhere(log_stream: io.StringIO) -> None:
    redactor = SecretRedactor()
    secret = "s3cr3t-Value-42"
    redactor.register(secret)
    configure_logging("DEBUG", json_logs=True, stream=log_stream, redactor=redactor)
    log = logging.getLogger("tests.telemetry.secrets")
    log.info("connecting with %s", secret, extra={"header": f"Bearer {secret}", "count": 3})
    try:
        raise RuntimeError(f"refused {secret}")
    except RuntimeError:
        log.exception("call failed")
    output = log_stream.getvalue()
    assert secret not in output
    first, second = (json.loads(line) for line in output.splitlines())
    assert first["message"] == "connecting with [REDACTED]"
    assert first["header"] == "Bearer [REDACTED]" and first["count"] == 3
    assert "trace_id" not in first, "no span, no trace id"
    assert set(first) >= {"time", "level", "logger", "message"}
    assert second["level"] == "ERROR" and "RuntimeError: refused [REDACTED]" in second["exception"]
    root_filters = [type(f).__name__ for h in logging.getLogger().handlers for f in h.filters]
    assert root_filters.count("RedactingFilter") >= len(logging.getLogger().handlers)


def test_log_format_follows_the_setting_and_the_terminal(log_stream: io.StringIO) -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal = Terminal()
    handler = configure_logging("INFO", json_logs=None, stream=terminal)
    assert not isinstance(handler.formatter, JsonFormatter), "a person at a terminal reads the human format"
    handler = configure_logging("INFO", json_logs=None, stream=log_stream)
    assert isinstance(handler.formatter, JsonFormatter), "a pipe or file gets JSON"
    ours = [h for h in logging.getLogger().handlers if isinstance(h.formatter, JsonFormatter | logging.Formatter)]
    assert handler in ours and sum(1 for h in ours if getattr(h, "_mad_telemetry", False)) == 1
    handler = configure_logging("INFO", json_logs=False, stream=log_stream)
    assert not isinstance(handler.formatter, JsonFormatter)


def test_telemetry_section_is_validated(tmp_path: Path) -> None:
    path = tmp_path / "ecosystem.toml"
    path.write_text('[telemetry]\notlp_endpoint = "http://127.0.0.1:4318"\njson_logs = true\n', encoding="utf-8")
    settings = load_settings(path, environ={})
    assert settings.telemetry.otlp_endpoint == "http://127.0.0.1:4318" and settings.telemetry.json_logs is True
    path.write_text('[telemetry]\notlp_endpoint = "127.0.0.1:4318"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"telemetry\.otlp_endpoint: .*http:// or https://"):
        load_settings(path, environ={})
    with pytest.raises(ConfigError, match=r"telemetry\.tracez: Extra inputs are not permitted"):
        load_settings(None, environ={"MAD_TELEMETRY__TRACEZ": "true"})
