"""Telling McNamara about authentication: failures as bus events, logins and token grants on the record.

Failed logins and token checks are published on ``events.auth`` (fire and forget), so
McNamara's brute-force rule counts them per IP. Successful logins and token creation
are audit-critical: they go through McNamara's ``record`` tool and the caller fails if
the record cannot be written. When McNamara is not running at all (the bus has no
route to it) the gateway logs a warning and carries on, so a deployment without
McNamara still works; any other failure is fatal to the action (fail closed).

Successful token use is far too frequent to audit per request: a success event is
published on first use of a token and then at most once per
``token_use_event_interval`` per token.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable

from pydantic import JsonValue

from bus.base import Bus, BusClosed, BusError
from bus.envelope import CommandPart, DataPart, Envelope, Kind, deadline_in
from bus.topics import AUTH, AuthEvent
from gateway.errors import ApiError
from mads.core import names

log = logging.getLogger(__name__)

MCNAMARA = names.MCNAMARA
SENDER = "gateway"
RECORD_TIMEOUT = 10.0
MAX_REMEMBERED = 10_000


class AuditUnavailable(ApiError):
    def __init__(self, what: str) -> None:
        super().__init__(503, "audit_unavailable", f"{what} could not be recorded in the audit trail; try again")


class AuthAudit:
    def __init__(self, bus: Bus, token_use_interval: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.bus = bus
        self.token_use_interval = token_use_interval
        self.clock = clock
        self._last_use: OrderedDict[str, float] = OrderedDict()

    async def publish(self, event: AuthEvent) -> None:
        with contextlib.suppress(BusClosed):
            await self.bus.publish(
                Envelope(
                    sender=SENDER,
                    recipient=AUTH,
                    kind=Kind.EVENT,
                    content=[DataPart(value=event.model_dump(mode="json"))],
                )
            )

    def token_use_due(self, token_id: str) -> bool:
        """Whether this successful use of ``token_id`` should be published (first use, then once per interval)."""
        now = self.clock()
        last = self._last_use.get(token_id)
        if last is not None and now - last < self.token_use_interval:
            return False
        self._last_use[token_id] = now
        self._last_use.move_to_end(token_id)
        while len(self._last_use) > MAX_REMEMBERED:
            self._last_use.popitem(last=False)
        return True

    async def record(
        self, event_type: str, actor: str, action: str, details: dict[str, JsonValue], *, outcome: str = "success"
    ) -> None:
        """Append a record (a success unless ``outcome`` says otherwise) through McNamara's ``record`` tool;
        :class:`AuditUnavailable` if it fails."""
        arguments: dict[str, JsonValue] = {
            "event_type": event_type,
            "actor": actor,
            "action": action,
            "outcome": outcome,
            "details": details,
        }
        envelope = Envelope(
            sender=SENDER,
            recipient=MCNAMARA,
            kind=Kind.REQUEST,
            deadline=deadline_in(RECORD_TIMEOUT),
            content=[CommandPart(tool="record", arguments=arguments)],
        )
        try:
            reply = await self.bus.request(envelope)
        except (BusError, TimeoutError) as exc:
            log.error("audit record %s for %s failed: %s", event_type, actor, type(exc).__name__)
            raise AuditUnavailable(action) from None
        if reply.error is None:
            return
        if reply.error.code == "no_route":
            log.warning("%s by %s not audited: McNamara is not running", event_type, actor)
            return
        log.error("audit record %s for %s refused: %s", event_type, actor, reply.error.code)
        raise AuditUnavailable(action)
