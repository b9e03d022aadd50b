"""The bus as one MAD may use it: it sends only as that MAD, and only for the work in progress.

The host gives every MAD a :class:`MadBus` rather than the bus itself. Identity on the bus is
then stamped by the runtime, not asserted by the sending code:

- an envelope a MAD publishes or requests must name the MAD (or one of its ephemeral
  instances, ``hopper.<id>``) as its sender — anything else is :class:`ForgedSender`;
- it must carry the principal of the current work (:mod:`mads.core.authority`) — anything
  else is :class:`ForgedPrincipal`, so no MAD can promote a person's request to another
  person or to the system by building an envelope by hand;
- a MAD may subscribe to its own address (and its instances') and to topics (``events.*``,
  ``stream.*``), never to another MAD's address, where it would receive that MAD's requests.

Replies are checked by the bus itself (:func:`bus.base.run_handler`): a reply must come from
the request's recipient and carry the request's principal. Across processes, the Redis bus
refuses to publish as a MAD its process does not host.
"""

from __future__ import annotations

from typing import Any

from bus.base import BatchObserver, Bus, BusError, ForgedSender, Gate, Handler, Subscription, waiting
from bus.envelope import Envelope
from mads.core import authority

TOPIC_PREFIXES = ("events.", "stream.")
"""Addresses any MAD may publish to or listen on: events and stream deltas, not another MAD's inbox."""


class ForgedPrincipal(BusError):
    """A MAD tried to send on behalf of a principal other than the one its work serves."""


class MadBus:
    """One MAD's handle on the bus (see the module docstring)."""

    def __init__(self, bus: Bus, identity: str) -> None:
        if isinstance(bus, MadBus):
            raise TypeError("a MadBus wraps the bus itself, not another MAD's handle")
        self.bus = bus
        self.identity = identity

    def owns(self, address: str) -> bool:
        """``address`` is this MAD or one of its ephemeral instances."""
        return address == self.identity or address.startswith(self.identity + ".")

    def check(self, envelope: Envelope) -> None:
        if not self.owns(envelope.sender):
            raise ForgedSender(f"{self.identity} may send only as itself, not as {envelope.sender!r}")
        expected = authority.current().principal
        if envelope.principal != expected:
            raise ForgedPrincipal(
                f"{self.identity} may send only for the work it is doing ({expected}), not for {envelope.principal}"
            )

    async def publish(self, envelope: Envelope) -> None:
        self.check(envelope)
        await self.bus.publish(envelope)

    async def request(self, envelope: Envelope, timeout: float | None = None) -> Envelope:
        """Send a request and wait for the reply; while it waits, this MAD's handler slot serves others."""
        self.check(envelope)
        with waiting():
            return await self.bus.request(envelope, timeout)

    async def subscribe(self, pattern: str, handler: Handler, **options: Any) -> Subscription:
        if not (self.owns(pattern) or pattern.startswith(TOPIC_PREFIXES)):
            raise ForgedSender(f"{self.identity} may listen on its own address and on topics, not on {pattern!r}")
        return await self.bus.subscribe(pattern, handler, **options)

    async def wiretap_batches(self, observer: BatchObserver, **options: Any) -> Subscription:
        return await self.bus.wiretap_batches(observer, **options)

    def has_listeners(self, address: str) -> bool:
        return self.bus.has_listeners(address)

    def add_gate(self, gate: Gate) -> None:
        self.bus.add_gate(gate)

    def remove_gate(self, gate: Gate) -> None:
        self.bus.remove_gate(gate)
