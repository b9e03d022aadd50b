"""Identity is stamped by the runtime: a MAD sends only as itself, only for the work in progress.

A MAD's code gets a :class:`~mads.core.handle.MadBus`, not the bus. (The bus's own checks — a reply
answers its request for the same principal; over Redis a process sends only as the MADs it hosts —
are in ``tests/bus/test_contract.py`` and ``tests/bus/test_redis_senders.py``.)
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import ClassVar

import pytest
from pydantic import BaseModel, ConfigDict

from bus.base import ForgedSender
from bus.envelope import SYSTEM, CommandPart, Envelope, Kind, Principal, ProsePart, deadline_in
from bus.memory import InMemoryBus
from mads.core import authority
from mads.core.base import MAD, MadContext
from mads.core.handle import ForgedPrincipal
from mads.core.tools import Call, tool

ALICE = Principal(kind="user", name="alice")
ROOT = Principal(kind="operator", name="root")


class NoArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Forger(MAD):
    """A MAD whose code tries to speak for others: every attempt must be refused by its handle."""

    name: ClassVar[str] = "forger"
    description: ClassVar[str] = "tries to forge"

    @tool("send a request as turing")
    async def as_turing(self, args: NoArgs) -> str:
        await self.bus.request(request("turing", "echo", sender="turing"))
        return "sent"

    @tool("send a request for an operator while serving someone else")
    async def promote(self, args: NoArgs, call: Call) -> str:
        await self.bus.request(request("echo", "whoami", sender=self.address, principal=ROOT))
        return "sent"

    @tool("ask the echo MAD who it serves (the legitimate way)")
    async def relay(self, args: NoArgs) -> str:
        value = await self.call("echo", "whoami")
        assert isinstance(value, str)
        return value


class Echo(MAD):
    name: ClassVar[str] = "echo"
    description: ClassVar[str] = "says whom a request serves"

    @tool("whom this request serves and through whom")
    async def whoami(self, args: NoArgs, call: Call) -> str:
        return f"{call.principal} via {'/'.join(call.envelope.chain)}"


def request(recipient: str, tool_name: str, *, sender: str, principal: Principal = SYSTEM) -> Envelope:
    return Envelope(
        sender=sender,
        recipient=recipient,
        kind=Kind.REQUEST,
        deadline=deadline_in(10),
        principal=principal,
        content=[CommandPart(tool=tool_name)],
    )


@pytest.fixture
async def bus() -> AsyncIterator[InMemoryBus]:
    b = InMemoryBus()
    await b.start()
    yield b
    await b.close()


@pytest.fixture
async def mads(bus: InMemoryBus, tmp_path: Path) -> AsyncIterator[None]:
    started = [Forger(MadContext(bus=bus, data_dir=tmp_path)), Echo(MadContext(bus=bus, data_dir=tmp_path))]
    for mad in started:
        await mad.start()
    yield
    for mad in started:
        await mad.stop()


async def test_a_mad_cannot_send_as_another_mad(bus: InMemoryBus, mads: None) -> None:
    reply = await bus.request(request("forger", "as_turing", sender="user.alice", principal=ALICE))
    assert reply.error is not None and reply.error.code == "handler_error"
    assert "ForgedSender" in reply.error.message and "forger may send only as itself" in reply.error.message


async def test_a_mad_cannot_promote_the_principal_it_serves(bus: InMemoryBus, mads: None) -> None:
    reply = await bus.request(request("forger", "promote", sender="user.alice", principal=ALICE))
    assert reply.error is not None and "ForgedPrincipal" in reply.error.message


async def test_the_principal_and_chain_travel_with_the_work(bus: InMemoryBus, mads: None) -> None:
    reply = await bus.request(request("forger", "relay", sender="user.alice", principal=ALICE))
    assert reply.error is None
    assert reply.data() == ["user:alice via forger"]


async def test_a_mad_cannot_listen_on_another_mads_address(bus: InMemoryBus, tmp_path: Path) -> None:
    forger = Forger(MadContext(bus=bus, data_dir=tmp_path))

    async def steal(envelope: Envelope) -> None:
        return None

    with pytest.raises(ForgedSender, match="may listen on its own address and on topics"):
        await forger.bus.subscribe("turing", steal)
    subscription = await forger.bus.subscribe("events.tool_call", steal)
    await subscription.cancel()


async def test_outside_any_request_a_mad_works_for_the_system(bus: InMemoryBus, tmp_path: Path) -> None:
    forger = Forger(MadContext(bus=bus, data_dir=tmp_path))
    assert authority.current().principal == SYSTEM
    with pytest.raises(ForgedPrincipal):
        await forger.bus.publish(
            Envelope(
                sender="forger",
                recipient="events.note",
                kind=Kind.EVENT,
                principal=ALICE,
                content=[ProsePart(text="for alice, really")],
            )
        )
    with authority.acting_for(ALICE):
        await forger.bus.publish(
            Envelope(
                sender="forger",
                recipient="events.note",
                kind=Kind.EVENT,
                principal=ALICE,
                content=[ProsePart(text="resumed work for alice")],
            )
        )
