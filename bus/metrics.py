"""The ecosystem's OpenTelemetry metrics: instruments, bus observation, Prometheus text rendering.

Message counts and queue depths are *observed* from :meth:`Bus.stats` when a reader
collects, so they cost nothing per message. Only the request-latency histogram is
recorded on the delivery path, and only when :data:`ENABLED` (see :mod:`bus.tracing`,
whose ``observe`` wraps deliveries). Instruments come from a meter provider handed to
:func:`enable_metrics` — never the process-wide one — so tests use a fresh provider each.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from opentelemetry.metrics import CallbackOptions, Counter, Histogram, MeterProvider, Observation
from opentelemetry.sdk.metrics.export import (
    Gauge,
    HistogramDataPoint,
    MetricsData,
    NumberDataPoint,
    Sum,
)
from opentelemetry.sdk.metrics.export import Histogram as HistogramData

if TYPE_CHECKING:
    from bus.base import Bus, BusStats

log = logging.getLogger(__name__)

METER_NAME = "mad-bus"
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
"""Seconds: a command between MADs takes well under a millisecond, an LLM turn up to minutes."""

ENABLED = False
"""Delivery metrics are recorded (checked by :func:`bus.tracing.observe`)."""

_STAT_COUNTERS = (
    ("published", "mad.bus.messages.published", "Envelopes accepted by the bus."),
    ("delivered", "mad.bus.messages.delivered", "Envelopes handed to a handler (after gates and contracts)."),
    ("rejected", "mad.bus.messages.rejected", "Envelopes refused by a delivery gate or a MAD's contract."),
    ("undeliverable", "mad.bus.messages.undeliverable", "Envelopes nobody was subscribed to."),
    ("handler_errors", "mad.bus.handler.errors", "Handlers that raised (answered with an error reply)."),
    ("expired_requests_dropped", "mad.bus.requests.expired", "Requests dropped because their deadline passed."),
    ("late_replies_dropped", "mad.bus.replies.late", "Replies dropped because nobody was waiting any more."),
)


@dataclass
class Instruments:
    request_duration: Histogram
    llm_tokens: Counter
    llm_cost: Counter
    llm_calls: Counter
    validation_failures: Counter
    rate_limit_hits: Counter


_instruments: Instruments | None = None
_buses: dict[str, Bus] = {}


def enable_metrics(provider: MeterProvider) -> Instruments:
    """Create every instrument on ``provider`` and start recording."""
    global ENABLED, _instruments
    meter = provider.get_meter(METER_NAME)
    for attr, name, description in _STAT_COUNTERS:
        meter.create_observable_counter(name, [_stat_callback(attr)], unit="{message}", description=description)
    meter.create_observable_gauge(
        "mad.bus.queue.depth",
        [_queue_depth],
        unit="{message}",
        description="Envelopes waiting in or being handled from each subscription's mailbox.",
    )
    _instruments = Instruments(
        request_duration=meter.create_histogram(
            "mad.bus.request.duration",
            unit="s",
            description="Time from a request reaching its handler to the reply (by destination MAD and outcome).",
            explicit_bucket_boundaries_advisory=list(LATENCY_BUCKETS),
        ),
        llm_tokens=meter.create_counter("mad.llm.tokens", unit="{token}", description="LLM tokens, by model/caller."),
        llm_cost=meter.create_counter("mad.llm.cost", unit="USD", description="LLM cost in US dollars."),
        llm_calls=meter.create_counter("mad.llm.calls", unit="{call}", description="LLM calls, by outcome."),
        validation_failures=meter.create_counter(
            "mad.validation.failures",
            unit="{failure}",
            description="Invalid output (LLM or peer) caught by validation, by MAD and problem.",
        ),
        rate_limit_hits=meter.create_counter(
            "mad.gateway.rate_limit.hits", unit="{hit}", description="Requests refused by the gateway's rate limits."
        ),
    )
    ENABLED = True
    _refresh_tracing()
    return _instruments


def disable_metrics() -> None:
    global ENABLED, _instruments
    ENABLED = False
    _instruments = None
    _buses.clear()
    _refresh_tracing()


_on_toggle: list[Callable[[], None]] = []
"""Called whenever metrics are switched on or off (:mod:`bus.tracing` recomputes its one delivery flag)."""


def on_toggle(listener: Callable[[], None]) -> None:
    _on_toggle.append(listener)


def _refresh_tracing() -> None:
    for listener in _on_toggle:
        listener()


def observe_bus(bus: Bus, name: str = "main") -> None:
    """Report ``bus``'s counters and queue depths (labelled ``bus=name``) at every collection."""
    _buses[name] = bus


def forget_bus(name: str = "main") -> None:
    _buses.pop(name, None)


def _snapshots() -> list[tuple[str, BusStats]]:
    out = []
    for name, bus in list(_buses.items()):
        try:
            out.append((name, bus.stats()))
        except RuntimeError:
            # Collected from an exporter thread while the loop mutated a subscription table: skip this round.
            log.debug("bus %s stats unavailable this collection", name)
    return out


def _stat_callback(attr: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
    def callback(options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(getattr(stats, attr), {"bus": name}) for name, stats in _snapshots()]

    return callback


def _queue_depth(options: CallbackOptions) -> Iterable[Observation]:
    return [
        Observation(depth, {"bus": name, "destination": destination})
        for name, stats in _snapshots()
        for destination, depth in stats.queue_depth.items()
    ]


def destination_label(address: str) -> str:
    """A MAD name from an address: ephemeral instances (``hopper.<id>``) would make one series each."""
    return address.split(".", 1)[0] if not address.startswith(("events.", "stream.")) else address


def record_request(recipient: str, outcome: str, seconds: float) -> None:
    instruments = _instruments
    if instruments is not None:
        instruments.request_duration.record(seconds, {"destination": destination_label(recipient), "outcome": outcome})


def record_llm_call(
    *, model: str, caller: str, input_tokens: int, output_tokens: int, cost_usd: float, outcome: str
) -> None:
    instruments = _instruments
    if instruments is None:
        return
    labels = {"model": model, "caller": caller}
    instruments.llm_calls.add(1, {**labels, "outcome": outcome})
    if input_tokens:
        instruments.llm_tokens.add(input_tokens, {**labels, "token_type": "input"})
    if output_tokens:
        instruments.llm_tokens.add(output_tokens, {**labels, "token_type": "output"})
    if cost_usd > 0:
        instruments.llm_cost.add(cost_usd, labels)


def record_validation_failure(*, mad: str, problem: str, source: str) -> None:
    instruments = _instruments
    if instruments is not None:
        instruments.validation_failures.add(1, {"mad": mad, "problem": problem, "source": source})


def record_rate_limit_hit(scope: str) -> None:
    """Called by the gateway each time a rate limit refuses a request (``scope``: e.g. ``ip``, ``token``)."""
    instruments = _instruments
    if instruments is not None:
        instruments.rate_limit_hits.add(1, {"scope": scope})


# ---- Prometheus text exposition (format 0.0.4) -------------------------------------------

_UNIT_SUFFIX = {"s": "seconds", "ms": "milliseconds", "By": "bytes", "USD": "usd"}
_INVALID = re.compile(r"[^a-zA-Z0-9_:]")


def prometheus_name(name: str, unit: str, *, counter: bool) -> str:
    """OTel name → Prometheus name: dots to underscores, unit suffix, ``_total`` for counters."""
    out = _INVALID.sub("_", name)
    suffix = _UNIT_SUFFIX.get(unit)
    if suffix and not out.endswith(f"_{suffix}"):
        out = f"{out}_{suffix}"
    if counter and not out.endswith("_total"):
        out = f"{out}_total"
    return out


def _label_value(value: object) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(attributes: Mapping[str, object] | None, extra: tuple[tuple[str, str], ...] = ()) -> str:
    items = [(_INVALID.sub("_", k), _label_value(v)) for k, v in (attributes or {}).items()]
    items += list(extra)
    return "{" + ",".join(f'{k}="{v}"' for k, v in sorted(items)) + "}" if items else ""


def _number(value: float) -> str:
    if isinstance(value, float):
        if math.isinf(value):
            return "+Inf" if value > 0 else "-Inf"
        if math.isnan(value):
            return "NaN"
        return repr(value)
    return str(value)


def render_prometheus(data: MetricsData | None) -> str:
    """Every metric in ``data`` in the Prometheus text format (one ``# HELP``/``# TYPE`` block per name)."""
    blocks: dict[str, list[str]] = {}
    for resource_metrics in data.resource_metrics if data else ():
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                body = metric.data
                if isinstance(body, HistogramData):
                    name, kind = prometheus_name(metric.name, metric.unit or "", counter=False), "histogram"
                    lines = [line for p in body.data_points for line in _histogram_lines(name, p)]
                elif isinstance(body, Sum | Gauge):
                    counter = isinstance(body, Sum) and body.is_monotonic
                    name = prometheus_name(metric.name, metric.unit or "", counter=counter)
                    kind = "counter" if counter else "gauge"
                    lines = [f"{name}{_labels(p.attributes)} {_number(p.value)}" for p in body.data_points]
                else:
                    continue
                if name not in blocks:
                    help_text = (metric.description or metric.name).replace("\\", "\\\\").replace("\n", "\\n")
                    blocks[name] = [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
                blocks[name].extend(lines)
    return "".join(line + "\n" for block in blocks.values() for line in block)


def _histogram_lines(name: str, point: HistogramDataPoint | NumberDataPoint) -> list[str]:
    assert isinstance(point, HistogramDataPoint)
    lines = []
    cumulative = 0
    for bound, count in zip((*point.explicit_bounds, math.inf), point.bucket_counts, strict=True):
        cumulative += count
        lines.append(f"{name}_bucket{_labels(point.attributes, (('le', _number(float(bound))),))} {cumulative}")
    lines.append(f"{name}_sum{_labels(point.attributes)} {_number(point.sum)}")
    lines.append(f"{name}_count{_labels(point.attributes)} {point.count}")
    return lines
