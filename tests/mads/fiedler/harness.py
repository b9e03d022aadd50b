"""A small real ecosystem for Fiedler and Imperator tests: InMemoryBus, Fiedler, a librarian MAD, an event log.

The librarian's tools are real code the LLM can call; the event log subscribes to
``events.*`` and ``stream.*`` with one worker each so it records in publication order,
and lets tests wait on a condition instead of sleeping.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pydantic import BaseModel, ConfigDict, Field, JsonValue

from bus.envelope import SYSTEM, CommandPart, Envelope, Kind, Principal, ProsePart, deadline_in
from bus.memory import InMemoryBus
from mads.core.base import MAD, MadContext, ToolFailure
from mads.core.redaction import SecretRedactor
from mads.core.tools import Call, tool
from mads.fiedler import Fiedler
from mads.fiedler.schemas import FiedlerConfig, ModelSpec
from tests.support.llm_server import ScriptedLLM

KEY_ENV = "FIEDLER_TEST_KEY"
SECRET_KEY = "sk-fiedler-test-7f3a9c2e5b1d"
DEADLINE = 60.0
"""Generous: only a failing test waits for it, and a loaded CI machine must not turn into a false failure."""


class SearchArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    query: str = Field(min_length=1)
    limit: int = Field(default=3, ge=1, le=10)


class LendArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    title: str


class Librarian(MAD):
    name = "librarian"
    description = "Finds and lends books."

    def __init__(self, ctx: MadContext, *, instance: str | None = None) -> None:
        super().__init__(ctx, instance=instance)
        self.searches: list[SearchArgs] = []
        self.callers: list[tuple[str, bool]] = []

    @tool("Search the catalogue by words.")
    async def search(self, args: SearchArgs, call: Call) -> dict[str, JsonValue]:
        self.searches.append(args)
        self.callers.append((call.sender, call.via_llm))
        return {"hits": [f"{args.query} volume {i}" for i in range(1, args.limit + 1)]}

    @tool("Lend a book by title.")
    async def lend(self, args: LendArgs) -> str:
        if args.title == "lost":
            raise ToolFailure("not_available", f"{args.title!r} is not on the shelf")
        return f"lent {args.title}"


_exporter: InMemorySpanExporter | None = None


def span_exporter() -> InMemorySpanExporter:
    """An in-memory exporter on the global SDK tracer provider (installed once per process)."""
    global _exporter
    if _exporter is None:
        provider = trace.get_tracer_provider()
        if not isinstance(provider, TracerProvider):
            provider = TracerProvider()
            trace.set_tracer_provider(provider)
        provider = trace.get_tracer_provider()
        assert isinstance(provider, TracerProvider), "another tracer provider was installed first"
        _exporter = InMemorySpanExporter()
        provider.add_span_processor(SimpleSpanProcessor(_exporter))
    return _exporter


def model(llm: ScriptedLLM, name: str = "main", wire: str = "scripted", **extra: Any) -> ModelSpec:
    """A registry entry pointing at the scripted server (wire name = what the server sees)."""
    return ModelSpec(name=name, model=f"openai/{wire}", api_base=llm.base_url, api_key_env=KEY_ENV, **extra)


def config(llm: ScriptedLLM, *models: ModelSpec, **extra: Any) -> FiedlerConfig:
    settings: dict[str, Any] = {"retries": 0, "timeout": 5.0}
    settings.update(extra)
    return FiedlerConfig(models=list(models) or [model(llm, roles=["imperator"])], **settings)


@dataclass
class EventLog:
    """Every ``events.*`` and ``stream.*`` envelope, in order, with a condition to wait on."""

    envelopes: list[Envelope] = field(default_factory=list)
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def record(self, envelope: Envelope) -> None:
        async with self.changed:
            self.envelopes.append(envelope)
            self.changed.notify_all()

    def on(self, topic: str) -> list[JsonValue]:
        return [e.data()[0] for e in self.envelopes if e.recipient == topic]

    async def wait(self, predicate: Callable[[EventLog], bool], timeout: float = 5.0) -> None:
        async with self.changed:
            await asyncio.wait_for(self.changed.wait_for(lambda: predicate(self)), timeout)

    async def wait_count(self, topic: str, n: int, timeout: float = 5.0) -> list[JsonValue]:
        await self.wait(lambda log: len(log.on(topic)) >= n, timeout)
        return self.on(topic)


@dataclass
class Eco:
    bus: InMemoryBus
    fiedler: Fiedler
    librarian: Librarian
    events: EventLog
    data_dir: Path

    async def ask(self, text: str, *, to: str = "librarian", conversation_id: str | None = "conv-1") -> Envelope:
        return await self.bus.request(
            Envelope(
                sender="tester",
                recipient=to,
                kind=Kind.REQUEST,
                conversation_id=conversation_id,
                deadline=deadline_in(DEADLINE),
                content=[ProsePart(text=text)],
            )
        )

    async def command(
        self,
        tool_name: str,
        to: str = "fiedler",
        *,
        as_sender: str = "tester",
        in_conversation: str | None = None,
        for_principal: Principal = SYSTEM,
        turn: str | None = None,
        **arguments: JsonValue,
    ) -> Envelope:
        """A command from ``as_sender`` (who Fiedler bills), in ``in_conversation``, serving ``for_principal``."""
        return await self.bus.request(
            Envelope(
                sender=as_sender,
                recipient=to,
                kind=Kind.REQUEST,
                conversation_id=in_conversation,
                deadline=deadline_in(DEADLINE),
                principal=for_principal,
                turn=turn,
                content=[CommandPart(tool=tool_name, arguments=arguments)],
            )
        )

    async def chat(self, **arguments: Any) -> Envelope:
        arguments.setdefault("messages", [{"role": "user", "content": "hello there"}])
        return await self.command("chat", **arguments)


@asynccontextmanager
async def ecosystem(
    data_dir: Path, fiedler_config: FiedlerConfig, *extra: type[MAD], redactor: SecretRedactor | None = None
) -> AsyncIterator[Eco]:
    """Start a bus, Fiedler, the librarian (and any extra MADs), and an event log; tear all down.

    Every MAD and the bus get ``redactor`` (a fresh one by default), as the host gives them the process's.
    """
    redactor = redactor if redactor is not None else SecretRedactor()
    bus = InMemoryBus(redact=redactor.redact)
    await bus.start()
    events = EventLog()
    await bus.subscribe("events.*", events.record, concurrency=1)
    await bus.subscribe("stream.*", events.record, concurrency=1)
    fiedler = Fiedler(MadContext(bus=bus, data_dir=data_dir, config=fiedler_config, redactor=redactor))
    librarian = Librarian(MadContext(bus=bus, data_dir=data_dir, redactor=redactor))
    others = [
        cls(MadContext(bus=bus, data_dir=data_dir, config=cls.config_model(), redactor=redactor)) for cls in extra
    ]
    for mad in (fiedler, librarian, *others):
        await mad.start()
    await fiedler.ready()
    try:
        yield Eco(bus=bus, fiedler=fiedler, librarian=librarian, events=events, data_dir=data_dir)
    finally:
        for mad in (*others, librarian, fiedler):
            await mad.stop()
        await bus.close()
