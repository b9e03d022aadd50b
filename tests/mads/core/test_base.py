"""The MAD base class: commands run tools directly, with validation and typed errors."""

from __future__ import annotations

import asyncio

from pydantic import BaseModel, ConfigDict, Field

from bus.envelope import CommandPart, DataPart, Envelope, Kind, deadline_in
from bus.memory import InMemoryBus
from bus.topics import TOOL_CALL
from mads.core.base import MAD, MadContext, ToolFailure
from mads.core.tools import Call, tool


class AddArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    a: int
    b: int = Field(ge=0)


class Calculator(MAD):
    name = "calculator"
    description = "adds numbers"

    @tool("Add two integers")
    async def add(self, args: AddArgs) -> int:
        return args.a + args.b

    @tool("Who asked")
    async def whoami(self, args: AddArgs, call: Call) -> str:
        return call.sender

    @tool("Always refuses")
    async def refuse(self, args: AddArgs) -> int:
        raise ToolFailure("refused", "I never add on Sundays")


def command(tool_name: str, **arguments: object) -> Envelope:
    return Envelope(
        sender="tester",
        recipient="calculator",
        kind=Kind.REQUEST,
        deadline=deadline_in(5),
        content=[CommandPart(tool=tool_name, arguments=arguments)],
    )


async def test_command_runs_tool_without_llm(tmp_path) -> None:
    bus = InMemoryBus()
    await bus.start()
    events: list[Envelope] = []
    seen = asyncio.Event()

    async def on_tool_call(envelope: Envelope) -> None:
        events.append(envelope)
        seen.set()

    await bus.subscribe(TOOL_CALL, on_tool_call)
    mad = Calculator(MadContext(bus=bus, data_dir=tmp_path))
    await mad.start()
    reply = await bus.request(command("add", a=2, b=3))
    assert reply.kind is Kind.REPLY
    assert reply.content == [DataPart(value=5)]
    assert (await bus.request(command("whoami", a=1, b=1))).data() == ["tester"]
    await asyncio.wait_for(seen.wait(), 5)
    assert events[0].data()[0]["tool"] == "add"
    await bus.close()


async def test_bad_arguments_and_tool_failures_are_typed(tmp_path) -> None:
    bus = InMemoryBus()
    await bus.start()
    mad = Calculator(MadContext(bus=bus, data_dir=tmp_path))
    await mad.start()
    reply = await bus.request(command("add", a="two", b=-1))
    assert reply.error is not None
    assert {f.field for f in reply.error.fields} == {"content.0.arguments.a", "content.0.arguments.b"}
    refused = await bus.request(command("refuse", a=1, b=1))
    assert refused.error is not None and refused.error.code == "refused"
    await bus.close()


async def test_tool_descriptors_are_mcp_shaped(tmp_path) -> None:
    mad = Calculator(MadContext(bus=InMemoryBus(), data_dir=tmp_path))
    descriptors = {d["name"]: d for d in mad.tool_descriptors()}
    assert set(descriptors) == {"add", "whoami", "refuse"}
    schema = descriptors["add"]["inputSchema"]
    assert schema["type"] == "object"
    assert schema["required"] == ["a", "b"]
    assert schema["additionalProperties"] is False
    assert descriptors["add"]["description"] == "Add two integers"


async def test_ephemeral_instance_lives_for_one_task(tmp_path) -> None:
    bus = InMemoryBus()
    await bus.start()
    ctx = MadContext(bus=bus, data_dir=tmp_path)
    async with Calculator.ephemeral(ctx) as worker:
        assert worker.address.startswith("calculator.")
        reply = await bus.request(
            Envelope(
                sender="tester",
                recipient=worker.address,
                kind=Kind.REQUEST,
                content=[CommandPart(tool="add", arguments={"a": 1, "b": 1})],
            ),
            timeout=5,
        )
        assert reply.data() == [2]
    gone = await bus.request(
        Envelope(
            sender="tester",
            recipient=worker.address,
            kind=Kind.REQUEST,
            content=[CommandPart(tool="add", arguments={"a": 1, "b": 1})],
        ),
        timeout=5,
    )
    assert gone.error is not None and gone.error.code == "no_route"
    await bus.close()
