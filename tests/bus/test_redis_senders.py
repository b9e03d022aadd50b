"""Over Redis, a process may publish only as the MADs it hosts (the host gives the bus that list)."""

from __future__ import annotations

import pytest

from bus.base import ForgedSender
from bus.envelope import CommandPart, Envelope, Kind, ProsePart, deadline_in
from tests.bus.conftest import MakeBus

pytestmark = pytest.mark.redis


async def test_a_process_sends_only_as_the_mads_it_hosts(make_bus: MakeBus) -> None:
    bus = await make_bus(senders=frozenset({"rogers", "bus"}))
    with pytest.raises(ForgedSender, match="does not host 'turing'"):
        await bus.publish(
            Envelope(sender="turing", recipient="events.x", kind=Kind.EVENT, content=[ProsePart(text="hi")])
        )
    with pytest.raises(ForgedSender):
        await bus.request(
            Envelope(
                sender="turing",
                recipient="rogers",
                kind=Kind.REQUEST,
                deadline=deadline_in(5),
                content=[CommandPart(tool="stats")],
            )
        )
    # Its own MADs, ephemeral instances included, are fine.
    await bus.publish(
        Envelope(sender="rogers.01J", recipient="events.x", kind=Kind.EVENT, content=[ProsePart(text="ok")])
    )
