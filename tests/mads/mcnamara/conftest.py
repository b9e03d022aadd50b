"""A real InMemoryBus with a real McNamara on a temporary data directory, plus event watchers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import JsonValue

from bus.base import Bus, Subscription
from bus.envelope import CommandPart, DataPart, Envelope, Kind, Principal, deadline_in
from bus.memory import InMemoryBus
from mads.core.base import MadContext
from mads.core.redaction import SecretRedactor
from mads.mcnamara import McNamara
from mads.mcnamara.schemas import McNamaraConfig

FENCE = "events.test_fence"
OPERATOR = "user.ops"
"""The address an operator's commands come from at the gateway."""
OPERATOR_PRINCIPAL = Principal(kind="operator", name="ops")
"""Whom those commands serve: what McNamara checks for its operator actions."""
PERSON = Principal(kind="user", name="alice")


class ManualClock:
    """Time the test moves by hand (the rules engine never reads the wall clock itself)."""

    def __init__(self) -> None:
        self.now = datetime(2030, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@dataclass
class Watch:
    """Collects every payload published on one topic; waits on conditions, never sleeps."""

    values: list[dict[str, JsonValue]] = field(default_factory=list)
    seen: list[str] = field(default_factory=list)
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    subscription: Subscription | None = None

    async def on(self, envelope: Envelope) -> None:
        async with self.changed:
            if envelope.sender != "test":
                for value in envelope.data():
                    assert isinstance(value, dict)
                    self.values.append(value)
            self.seen.append(envelope.id)
            self.changed.notify_all()

    async def wait_for(
        self, predicate: Callable[[list[dict[str, JsonValue]]], bool], timeout: float = 5.0
    ) -> list[dict[str, JsonValue]]:
        async with asyncio.timeout(timeout), self.changed:
            await self.changed.wait_for(lambda: predicate(self.values))
        return self.values

    async def wait_seen(self, envelope_id: str, timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout), self.changed:
            await self.changed.wait_for(lambda: envelope_id in self.seen)


class Harness:
    def __init__(self, bus: Bus, data_dir: Path) -> None:
        self.bus = bus
        self.data_dir = data_dir
        self.clock = ManualClock()
        self.mad: McNamara | None = None
        self.security = Watch()
        self.alerts = Watch()
        self.redactor = SecretRedactor()
        """The redactor McNamara gets through its context (the host would give it the process's)."""

    @property
    def m(self) -> McNamara:
        assert self.mad is not None
        return self.mad

    async def watch(self) -> None:
        self.security.subscription = await self.bus.subscribe("events.security", self.security.on)
        self.alerts.subscription = await self.bus.subscribe("events.alert", self.alerts.on)

    async def start(self, config: McNamaraConfig | None = None) -> McNamara:
        ctx = MadContext(
            bus=self.bus, data_dir=self.data_dir, config=config or McNamaraConfig(), redactor=self.redactor
        )
        self.mad = McNamara(ctx, clock=self.clock)
        await self.mad.start()
        return self.mad

    async def stop(self) -> None:
        if self.mad is not None:
            await self.mad.stop()
            self.mad = None

    async def publish(self, topic: str, value: JsonValue, sender: str = "probe") -> Envelope:
        envelope = Envelope(sender=sender, recipient=topic, kind=Kind.EVENT, content=[DataPart(value=value)])
        await self.bus.publish(envelope)
        return envelope

    async def fence(self) -> None:
        """Return once McNamara has handled every event published before this call."""
        envelope = await self.publish(FENCE, {}, sender="test")
        await self.m.wait_consumed(envelope.id)

    async def settle_alerts(self) -> None:
        """Return once the alert watcher has seen every alert published before this call."""
        envelope = await self.publish("events.alert", {}, sender="test")
        await self.alerts.wait_seen(envelope.id)

    async def call(
        self,
        tool: str,
        arguments: dict[str, JsonValue] | None = None,
        sender: str = OPERATOR,
        principal: Principal = OPERATOR_PRINCIPAL,
    ) -> Envelope:
        return await self.bus.request(
            Envelope(
                sender=sender,
                principal=principal,
                recipient="mcnamara",
                kind=Kind.REQUEST,
                deadline=deadline_in(10),
                content=[CommandPart(tool=tool, arguments=arguments or {})],
            )
        )

    async def result(
        self,
        tool: str,
        arguments: dict[str, JsonValue] | None = None,
        sender: str = OPERATOR,
        principal: Principal = OPERATOR_PRINCIPAL,
    ) -> JsonValue:
        reply = await self.call(tool, arguments, sender, principal)
        assert reply.error is None, reply.error
        return reply.data()[0]


@pytest.fixture
async def bus() -> AsyncIterator[InMemoryBus]:
    b = InMemoryBus()
    await b.start()
    yield b
    await b.close()


@pytest.fixture
async def harness(bus: InMemoryBus, tmp_path: Path) -> AsyncIterator[Harness]:
    h = Harness(bus, tmp_path / "data")
    await h.watch()
    await h.start()
    yield h
    await h.stop()
