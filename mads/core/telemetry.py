"""Process-level telemetry: tracer and meter providers, OTLP export, Prometheus text, JSON logs.

The host calls :meth:`Telemetry.start` once its bus is up and :meth:`Telemetry.stop`
after the bus has drained. Nothing is on unless configured (``[telemetry]``):

- **traces** — on when an OTLP endpoint is set (``otlp_endpoint`` or the standard
  ``OTEL_EXPORTER_OTLP_ENDPOINT``) or ``traces = true``; bus hops are spans
  (:mod:`bus.tracing`), Fiedler's LLM calls are GenAI child spans.
- **metrics** — on by default: bus counters and queue depth, request latency, LLM tokens
  and cost, validation failures, rate-limit hits (:mod:`bus.metrics`); rendered for the
  gateway's ``GET /metrics`` by :func:`prometheus_text`, exported over OTLP when configured.
- **logs** — :func:`configure_logging`: one JSON object per line (or a human format on a
  terminal), with trace ids, every root handler scrubbed by Turing's redactor.

The OpenTelemetry *global* tracer provider can be set once per process. It is needed
because Fiedler's spans come from it, so the first start installs it with a relay
processor, and every start after that (a second host in a test process) only points
the relay at its own exporters. Meter providers are never global: each start makes its own.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import IO, Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bus import metrics as bus_metrics
from bus import tracing as bus_tracing
from bus.base import Bus, Subscription
from bus.envelope import Envelope
from bus.topics import LLM_CALL, VALIDATION_FAILURE, ValidationFailure
from mads.core.redaction import REDACTOR, RedactingFilter, SecretRedactor
from mads.core.settings import TelemetrySection

log = logging.getLogger(__name__)

HUMAN_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
ENDPOINT_ENV = "OTEL_EXPORTER_OTLP_ENDPOINT"

record_rate_limit_hit = bus_metrics.record_rate_limit_hit
"""For the gateway: ``record_rate_limit_hit("ip")`` each time a rate limit refuses a request."""


# ---- traces ----------------------------------------------------------------------------


class _Relay(SpanProcessor):
    """Sits on the process-wide tracer provider and forwards to the current start's processors."""

    def __init__(self) -> None:
        self.targets: tuple[SpanProcessor, ...] = ()

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        for target in self.targets:
            target.on_start(span, parent_context=parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        for target in self.targets:
            target.on_end(span)

    def shutdown(self) -> None:
        for target in self.targets:
            target.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return all(target.force_flush(timeout_millis) for target in self.targets)


_RELAY = _Relay()
_relay_host: TracerProvider | None = None


def process_tracer_provider(resource: Resource) -> TracerProvider:
    """The process-wide SDK tracer provider (installed on first use) with the relay on it."""
    global _relay_host
    current = trace.get_tracer_provider()
    if not isinstance(current, TracerProvider):
        trace.set_tracer_provider(TracerProvider(resource=resource))
        current = trace.get_tracer_provider()
    if not isinstance(current, TracerProvider):
        log.warning("a non-SDK tracer provider is installed; bus spans use a private one")
        current = TracerProvider(resource=resource)
    if _relay_host is not current:
        current.add_span_processor(_RELAY)
        _relay_host = current
    return current


# ---- events → metrics ------------------------------------------------------------------


class LLMCallPayload(BaseModel):
    """The fields of Fiedler's ``events.llm_call`` payload that metrics need (others are ignored)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    caller: str = Field(min_length=1, max_length=128)
    model: str | None = Field(default=None, max_length=200)
    input_tokens: int = Field(ge=0)
    output_tokens: int = Field(ge=0)
    cost_usd: float = Field(ge=0)
    ok: bool
    error_code: str | None = Field(default=None, max_length=64)


async def count_llm_call(envelope: Envelope) -> None:
    for value in envelope.data():
        try:
            event = LLMCallPayload.model_validate(value)
        except ValidationError as exc:
            log.warning("%s from %s not counted: %s", LLM_CALL, envelope.sender, _fields(exc))
            continue
        bus_metrics.record_llm_call(
            model=event.model or "unknown",
            caller=event.caller,
            input_tokens=event.input_tokens,
            output_tokens=event.output_tokens,
            cost_usd=event.cost_usd,
            outcome="ok" if event.ok else event.error_code or "error",
        )


async def count_validation_failure(envelope: Envelope) -> None:
    for value in envelope.data():
        try:
            event = ValidationFailure.model_validate(value)
        except ValidationError as exc:
            log.warning("%s from %s not counted: %s", VALIDATION_FAILURE, envelope.sender, _fields(exc))
            continue
        bus_metrics.record_validation_failure(mad=event.mad, problem=event.problem, source=event.source)


def _fields(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(x) for x in e['loc']) or '(root)'}: {e['msg']}"
        for e in exc.errors(include_url=False, include_input=False)
    )


# ---- the process's telemetry -----------------------------------------------------------


class Telemetry:
    """Providers and exporters of one host; ``extra_*`` let tests add in-memory exporters/readers."""

    def __init__(
        self,
        section: TelemetrySection | None = None,
        *,
        instance: str = "local",
        extra_span_processors: Sequence[SpanProcessor] = (),
        extra_metric_readers: Sequence[MetricReader] = (),
    ) -> None:
        self.section = section or TelemetrySection()
        self.endpoint = self.section.otlp_endpoint or os.environ.get(ENDPOINT_ENV) or None
        self.traces = self.section.traces if self.section.traces is not None else self.endpoint is not None
        self.resource = Resource.create({"service.name": self.section.service_name, "service.instance.id": instance})
        self.instance = instance
        self.extra_span_processors = tuple(extra_span_processors)
        self.extra_metric_readers = tuple(extra_metric_readers)
        self.span_processors: tuple[SpanProcessor, ...] = ()
        self.meter_provider: MeterProvider | None = None
        self.prometheus_reader: InMemoryMetricReader | None = None
        self._subscriptions: list[Subscription] = []

    async def start(self, bus: Bus, *, gateway_here: bool = True) -> None:
        """Switch on what the section asks for; event metrics default to the gateway's process."""
        global _current
        if self.traces:
            processors = list(self.extra_span_processors)
            if self.endpoint is not None:
                processors.append(BatchSpanProcessor(self._span_exporter()))
            self.span_processors = tuple(processors)
            _RELAY.targets = self.span_processors
            bus_tracing.enable_tracing(process_tracer_provider(self.resource))
        if self.section.metrics:
            self.prometheus_reader = InMemoryMetricReader()
            readers: list[MetricReader] = [self.prometheus_reader, *self.extra_metric_readers]
            if self.endpoint is not None:
                readers.append(
                    PeriodicExportingMetricReader(
                        self._metric_exporter(), export_interval_millis=self.section.export_interval * 1000
                    )
                )
            self.meter_provider = MeterProvider(resource=self.resource, metric_readers=readers)
            bus_metrics.enable_metrics(self.meter_provider)
            bus_metrics.observe_bus(bus)
            count_events = self.section.event_metrics
            if count_events if count_events is not None else gateway_here:
                group = f"telemetry.{self.instance}"
                self._subscriptions = [
                    await bus.subscribe(LLM_CALL, count_llm_call, group=group, concurrency=1),
                    await bus.subscribe(VALIDATION_FAILURE, count_validation_failure, group=group, concurrency=1),
                ]
        _current = self
        log.info(
            "telemetry: traces %s, metrics %s, OTLP %s",
            "on" if self.traces else "off",
            "on" if self.section.metrics else "off",
            self.endpoint or "not configured",
        )

    async def stop(self) -> None:
        """Stop recording and flush exporters (off the event loop: OTLP export is blocking HTTP)."""
        global _current
        for subscription in self._subscriptions:
            try:
                await subscription.cancel()
            except Exception as exc:
                # Usually the bus closed first (the host drains it before stopping telemetry).
                log.debug("telemetry subscription %s not cancelled: %s", subscription.spec.pattern, exc)
        self._subscriptions.clear()
        was_current = _current is self
        if was_current:
            _current = None
            bus_tracing.disable_tracing()
        processors, self.span_processors = self.span_processors, ()
        meter_provider, self.meter_provider = self.meter_provider, None
        self.prometheus_reader = None
        # The final export still observes the bus's counters; only then stop observing it.
        await asyncio.to_thread(_shutdown, processors, meter_provider)
        if _RELAY.targets == processors:
            _RELAY.targets = ()
        if was_current:
            bus_metrics.disable_metrics()

    def prometheus_text(self) -> str:
        reader = self.prometheus_reader
        return bus_metrics.render_prometheus(reader.get_metrics_data()) if reader is not None else ""

    def _span_exporter(self) -> Any:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        if self.section.otlp_endpoint:
            return OTLPSpanExporter(endpoint=_signal_url(self.section.otlp_endpoint, "traces"))
        return OTLPSpanExporter()

    def _metric_exporter(self) -> Any:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

        if self.section.otlp_endpoint:
            return OTLPMetricExporter(endpoint=_signal_url(self.section.otlp_endpoint, "metrics"))
        return OTLPMetricExporter()


def _signal_url(base: str, signal: str) -> str:
    return f"{base.rstrip('/')}/v1/{signal}"


def _shutdown(processors: Sequence[SpanProcessor], meter_provider: MeterProvider | None) -> None:
    for processor in processors:
        try:
            processor.shutdown()
        except Exception:
            log.exception("span exporter shutdown failed")
    if meter_provider is not None:
        try:
            meter_provider.shutdown()
        except Exception:
            log.exception("metric exporter shutdown failed")


_current: Telemetry | None = None


def current() -> Telemetry | None:
    """The started telemetry of this process, if any."""
    return _current


def prometheus_text() -> str:
    """Every metric of this process in the Prometheus text format, for the gateway's ``GET /metrics``.

    Empty when metrics are off. Cheap enough to call on the event loop (a collection
    reads in-memory aggregates and ``bus.stats()``). Serve it as
    ``text/plain; version=0.0.4; charset=utf-8``.
    """
    telemetry = _current
    return telemetry.prometheus_text() if telemetry is not None else ""


PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


# ---- logs ------------------------------------------------------------------------------

_RECORD_FIELDS = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime", "taskName"}
_OURS = "_mad_telemetry"


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, trace/span ids, extra fields.

    The whole object is scrubbed again here, because :class:`RedactingFilter` only
    covers the message and traceback, not ``extra=`` fields.
    """

    def __init__(self, redactor: SecretRedactor | None = None) -> None:
        super().__init__()
        self.redactor = redactor if redactor is not None else REDACTOR

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            entry["trace_id"] = format(context.trace_id, "032x")
            entry["span_id"] = format(context.span_id, "016x")
        for key, value in record.__dict__.items():
            if key not in _RECORD_FIELDS and not key.startswith("_"):
                entry[key if key not in entry else f"extra.{key}"] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = record.stack_info
        redact = self.redactor.redact
        return json.dumps(
            self.redactor.redact_structure(entry), default=lambda value: redact(str(value)), ensure_ascii=False
        )


def use_json(json_logs: bool | None, stream: IO[str]) -> bool:
    """``None`` means: JSON unless a person is watching (``stream`` is a terminal)."""
    if json_logs is not None:
        return json_logs
    isatty = getattr(stream, "isatty", None)
    return not (callable(isatty) and isatty())


def configure_logging(
    level: str | int = "INFO",
    json_logs: bool | None = None,
    *,
    stream: IO[str] | None = None,
    redactor: SecretRedactor | None = None,
) -> logging.Handler:
    """Put one stream handler on the root logger (replacing the one a previous call added) and
    a :class:`RedactingFilter` on every root handler, so no secret Turing knows reaches output."""
    stream = stream if stream is not None else sys.stderr
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter(redactor) if use_json(json_logs, stream) else logging.Formatter(HUMAN_FORMAT))
    setattr(handler, _OURS, True)
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _OURS, False)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    install_redaction(root, redactor)
    return handler


def install_redaction(logger: logging.Logger | None = None, redactor: SecretRedactor | None = None) -> None:
    """A redacting filter on each of ``logger``'s handlers (filters on loggers miss propagated records)."""
    target = logger if logger is not None else logging.getLogger()
    for handler in target.handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter(redactor))


__all__ = [
    "PROMETHEUS_CONTENT_TYPE",
    "JsonFormatter",
    "Telemetry",
    "configure_logging",
    "current",
    "install_redaction",
    "prometheus_text",
    "record_rate_limit_hit",
]
