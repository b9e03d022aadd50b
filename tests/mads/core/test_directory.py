"""The MAD directory keeps every instance of a MAD: two processes hosting one MAD are two entries."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Literal

import pytest

from bus.envelope import DataPart, Envelope, Kind
from bus.memory import InMemoryBus
from mads.core.directory import PRESENCE, PRESENCE_QUERY, Directory, PresenceAnnouncement, PresenceAnnouncer
from tests.support.waiting import eventually


@pytest.fixture
async def bus() -> AsyncIterator[InMemoryBus]:
    bus = InMemoryBus()
    await bus.start()
    yield bus
    await bus.close(drain_timeout=1)


async def announce(bus: InMemoryBus, mad: str, process: str, status: Literal["up", "down"] = "up") -> None:
    value = PresenceAnnouncement(mad=mad, address=mad, status=status, process=process, card={"name": mad, "p": process})
    await bus.publish(
        Envelope(sender=mad, recipient=PRESENCE, kind=Kind.EVENT, content=[DataPart(value=value.model_dump())])
    )


def instances(directory: Directory) -> list[tuple[str, str, bool]]:
    return [(e.mad, e.process, e.alive) for e in directory.entries()]


async def test_two_processes_hosting_one_mad_are_both_listed_through_every_heartbeat(bus: InMemoryBus) -> None:
    directory = Directory(bus)
    await directory.start()
    heard: list[Envelope] = []

    async def count(envelope: Envelope) -> None:
        heard.append(envelope)

    await bus.subscribe(PRESENCE, count)
    # no heartbeat during the test: each announcement after the start answers a query
    first = PresenceAnnouncer(bus, "grace", "grace", {"name": "grace"}, "host-1", heartbeat=3600)
    second = PresenceAnnouncer(bus, "grace", "grace", {"name": "grace"}, "host-2", heartbeat=3600)
    await first.start()
    await second.start()
    await eventually(lambda: len(directory.entries()) == 2, what="both instances listed")
    both = [("grace", "host-1", True), ("grace", "host-2", True)]
    for round_ in range(1, 4):  # each query makes both instances announce again, in either order
        await bus.publish(
            Envelope(sender="tester", recipient=PRESENCE_QUERY, kind=Kind.EVENT, content=[DataPart(value={})])
        )
        await eventually(lambda: len(heard) >= 2 + 2 * round_, what=f"round {round_} of announcements")  # noqa: B023
        assert instances(directory) == both
    assert directory.is_alive("grace")
    assert [e.mad for e in directory.latest()] == ["grace"], "one entry per MAD where one is wanted"

    await first.stop()
    await eventually(lambda: len(directory.entries()) == 1, what="the stopped instance to go")
    assert instances(directory) == [("grace", "host-2", True)]
    assert directory.is_alive("grace")
    await second.stop()
    await eventually(lambda: directory.entries() == [], what="the last instance to go")
    assert not directory.is_alive("grace")
    await directory.stop()


async def test_a_silent_instance_is_dropped_while_another_serves_the_mad(bus: InMemoryBus) -> None:
    directory = Directory(bus, expiry=0.05)
    await directory.start()
    await announce(bus, "rogers", "host-1")
    await announce(bus, "rogers", "host-2")
    await eventually(lambda: instances(directory) == [("rogers", "host-1", False), ("rogers", "host-2", False)])
    assert not directory.is_alive("rogers")
    assert [(e.mad, e.alive) for e in directory.latest()] == [("rogers", False)], "a MAD with no live instance: down"

    await announce(bus, "rogers", "host-3")  # host-1 and host-2 crashed; host-3 took over
    await eventually(lambda: [(m, p) for m, p, _ in instances(directory)] == [("rogers", "host-3")])
    assert directory.card("rogers") == {"name": "rogers", "p": "host-3"}
    await directory.stop()


async def test_the_card_is_the_last_heard_instances(bus: InMemoryBus) -> None:
    directory = Directory(bus)
    await directory.start()
    await announce(bus, "hopper", "host-1")
    await announce(bus, "hopper", "host-2")
    await eventually(lambda: len(directory.entries()) == 2)
    assert directory.card("hopper") == {"name": "hopper", "p": "host-2"}
    await announce(bus, "hopper", "host-2", "down")
    await eventually(lambda: instances(directory) == [("hopper", "host-1", True)])
    assert directory.card("hopper") == {"name": "hopper", "p": "host-1"}
    await directory.stop()
