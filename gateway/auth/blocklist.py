"""IP addresses McNamara has blocked, learnt from ``events.security`` and refused until ``until``.

Only announcements whose sender is McNamara count (bus senders are not
authenticated, so this is as far as trust goes on one bus). At start the gateway
asks McNamara's ``blocked_ips`` tool once, so blocks made before a restart hold.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
from collections.abc import Callable
from datetime import UTC, datetime

from pydantic import TypeAdapter, ValidationError

from bus.base import Bus, BusError, Subscription
from bus.envelope import CommandPart, Envelope, Kind, deadline_in
from bus.topics import SECURITY, SecurityAction
from mads.core import names

log = logging.getLogger(__name__)

MCNAMARA = names.MCNAMARA
SENDER = "gateway"
_WHEN = TypeAdapter(datetime)
Clock = Callable[[], datetime]


def _utcnow() -> datetime:
    return datetime.now(UTC)


def normalise(ip: str) -> str:
    """One spelling per address (an IPv4-mapped IPv6 peer counts as its IPv4 address)."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


class BlockList:
    def __init__(self, clock: Clock = _utcnow) -> None:
        self.clock = clock
        self._until: dict[str, datetime] = {}
        self._subscription: Subscription | None = None

    def blocked_until(self, ip: str) -> datetime | None:
        key = normalise(ip)
        until = self._until.get(key)
        if until is None:
            return None
        if until <= self.clock():
            del self._until[key]
            return None
        return until

    def apply(self, action: SecurityAction) -> None:
        if action.ip is None:
            return
        ip = normalise(str(action.ip))
        if action.action == "block_ip" and action.until is not None:
            self._until[ip] = action.until
        elif action.action == "unblock_ip":
            self._until.pop(ip, None)

    async def follow(self, bus: Bus, sync_timeout: float = 5.0) -> None:
        self._subscription = await bus.subscribe(SECURITY, self._on_security, group=f"gateway-blocks:{id(self)}")
        with contextlib.suppress(BusError, TimeoutError):
            reply = await bus.request(
                Envelope(
                    sender=SENDER,
                    recipient=MCNAMARA,
                    kind=Kind.REQUEST,
                    deadline=deadline_in(sync_timeout),
                    content=[CommandPart(tool="blocked_ips")],
                )
            )
            for value in reply.data():
                for entry in value if isinstance(value, list) else []:
                    with contextlib.suppress(ValidationError, KeyError, TypeError):
                        self._until[normalise(str(entry["ip"]))] = _WHEN.validate_python(entry["until"])

    async def stop(self) -> None:
        if self._subscription is not None:
            await self._subscription.cancel()
            self._subscription = None

    async def _on_security(self, envelope: Envelope) -> None:
        if envelope.sender.split(".", 1)[0] != MCNAMARA:
            return
        for value in envelope.data():
            try:
                self.apply(SecurityAction.model_validate(value))
            except ValidationError as exc:
                log.warning("ignoring a malformed security action (%d errors)", exc.error_count())
