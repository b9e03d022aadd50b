"""The quarantine gate: refuses a quarantined MAD's messages before any handler sees them.

Gates run in the *delivering* process. McNamara owns the quarantine list and
installs one gate on its own bus; every other process (Redis deployments)
installs a :class:`QuarantineGate` with :meth:`QuarantineGate.follow`, which
learns the list from McNamara's ``events.security`` announcements and from its
``quarantined`` tool at start-up. Needs only the bus, so a host can use it
without importing McNamara.

A quarantined MAD may still publish events on ``events.*`` topics (tool calls,
validation failures, presence): they command nobody, and the audit trail should
keep seeing what the MAD does. Its requests and everything else are refused.
"""

from __future__ import annotations

import contextlib
import logging

from pydantic import ValidationError

from bus.base import Bus, BusError, Subscription
from bus.envelope import CommandPart, Envelope, ErrorInfo, Kind, deadline_in
from bus.topics import SECURITY, SecurityAction
from mads.core import names

log = logging.getLogger(__name__)

SELF = names.MCNAMARA


_mad = names.mad_of


class QuarantineGate:
    """A bus delivery gate over a set of quarantined MAD names (``hopper.01J…`` counts as ``hopper``)."""

    def __init__(self) -> None:
        self._mads: set[str] = set()
        self._subscription: Subscription | None = None
        self._bus: Bus | None = None

    def quarantine(self, mad: str) -> None:
        if mad != SELF:
            self._mads.add(mad)

    def release(self, mad: str) -> None:
        self._mads.discard(mad)

    def is_quarantined(self, mad: str) -> bool:
        return mad in self._mads

    @property
    def quarantined(self) -> frozenset[str]:
        return frozenset(self._mads)

    def __call__(self, envelope: Envelope) -> ErrorInfo | None:
        if not self._mads:
            return None
        mad = _mad(envelope.sender)
        if mad not in self._mads:
            return None
        if envelope.kind is Kind.EVENT and envelope.recipient.startswith("events."):
            return None
        return ErrorInfo(
            code="quarantined",
            message=f"MAD {mad!r} is quarantined by mcnamara; an operator must release it",
        )

    def apply(self, action: SecurityAction) -> None:
        if action.mad is None:
            return
        if action.action == "quarantine":
            self.quarantine(action.mad)
        elif action.action == "release":
            self.release(action.mad)

    async def follow(self, bus: Bus, *, sync_timeout: float = 5.0) -> None:
        """Install on ``bus`` and track McNamara's decisions (for processes without McNamara)."""
        self._bus = bus
        bus.add_gate(self)
        self._subscription = await bus.subscribe(SECURITY, self._on_security, group=f"quarantine-gate:{id(self)}")
        with contextlib.suppress(BusError, TimeoutError):
            reply = await bus.request(
                Envelope(
                    sender=names.BUS,
                    recipient=SELF,
                    kind=Kind.REQUEST,
                    deadline=deadline_in(sync_timeout),
                    content=[CommandPart(tool="quarantined")],
                )
            )
            for value in reply.data():
                for entry in value if isinstance(value, list) else []:
                    if isinstance(entry, dict) and isinstance(entry.get("mad"), str):
                        self.quarantine(entry["mad"])

    async def stop(self) -> None:
        if self._subscription is not None:
            await self._subscription.cancel()
            self._subscription = None
        if self._bus is not None:
            self._bus.remove_gate(self)
            self._bus = None

    async def _on_security(self, envelope: Envelope) -> None:
        if _mad(envelope.sender) != SELF:
            return
        for value in envelope.data():
            try:
                self.apply(SecurityAction.model_validate(value))
            except ValidationError as exc:
                log.warning("ignoring malformed security action: %s", exc.error_count())
