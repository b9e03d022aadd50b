"""Helpers for Rogers's tests: bus calls, a recording wiretap and a small peer MAD."""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import BaseModel, ConfigDict, JsonValue

from bus.base import Bus
from bus.envelope import SYSTEM, CommandPart, DataPart, Envelope, Kind, Principal, ProsePart, deadline_in
from mads.core.base import MAD, ToolFailure
from mads.core.tools import tool

WAIT = 10.0


async def request(
    bus: Bus,
    recipient: str,
    tool_name: str,
    arguments: dict[str, JsonValue] | None = None,
    *,
    conversation_id: str | None = None,
    sender: str = "user.tester",
    principal: Principal = SYSTEM,
) -> Envelope:
    envelope = Envelope(
        sender=sender,
        recipient=recipient,
        kind=Kind.REQUEST,
        conversation_id=conversation_id,
        deadline=deadline_in(WAIT),
        principal=principal,
        content=[CommandPart(tool=tool_name, arguments=arguments or {})],
    )
    return await bus.request(envelope)


async def call(bus: Bus, tool_name: str, arguments: dict[str, JsonValue] | None = None, **kw: Any) -> Any:
    """Run one of Rogers's tools over the bus and return its result; fail the test on an error reply."""
    reply = await request(bus, "rogers", tool_name, arguments, **kw)
    assert reply.error is None, reply.error
    return reply.data()[0]


def note(
    conversation_id: str | None, text: str, *, sender: str = "user.alice", recipient: str = "events.note"
) -> Envelope:
    """An event carrying prose: published, nobody needs to answer it."""
    return Envelope(
        sender=sender,
        recipient=recipient,
        kind=Kind.EVENT,
        conversation_id=conversation_id,
        content=[ProsePart(text=text)],
    )


class Recorder:
    """A second wiretap: what crossed the bus, in publication order."""

    def __init__(self) -> None:
        self.seen: list[Envelope] = []
        self._changed = asyncio.Condition()

    async def __call__(self, envelope: Envelope) -> None:
        async with self._changed:
            self.seen.append(envelope)
            self._changed.notify_all()

    async def through(self, envelope_id: str) -> list[Envelope]:
        """Everything seen up to and including ``envelope_id`` (waits for it)."""
        async with asyncio.timeout(WAIT), self._changed:
            await self._changed.wait_for(lambda: any(e.id == envelope_id for e in self.seen))
        index = next(i for i, e in enumerate(self.seen) if e.id == envelope_id)
        return self.seen[: index + 1]


class EchoArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str


class Echo(MAD):
    """A peer that answers, fails on demand, and (through the base class) emits tool-call events."""

    name = "echo"
    description = "Repeats what it is given."
    accepts_prose = False

    @tool("Return the text.")
    async def echo(self, args: EchoArgs) -> JsonValue:
        return args.text

    @tool("Always fail.")
    async def fail(self, args: EchoArgs) -> JsonValue:
        raise ToolFailure("refused", f"echo refuses {len(args.text)} characters")


def data_value(envelope: Envelope) -> JsonValue:
    parts = [p for p in envelope.content if isinstance(p, DataPart)]
    return parts[0].value
