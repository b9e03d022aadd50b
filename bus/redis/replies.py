"""Replies as they cross processes: addressed back to the requester, and the no-route answer.

Shared by the bus (publishing) and its consumers (answering), which is why it is a module of
its own rather than a part of either.
"""

from __future__ import annotations

from bus.envelope import Envelope, ErrorInfo
from bus.redis.settings import INBOX_NAMESPACE


def to_requester(reply: Envelope, request: Envelope) -> tuple[Envelope, str | None]:
    """Address a reply bound for an inbox to the requester; return it and the inbox to route it to.

    ``request()`` points ``reply_to`` at this process's inbox, so a plain reply would be
    addressed to ``_inbox.<instance>`` — and the wiretap (Rogers) would store that
    transport detail as a participant. The requester is the request's sender (an
    explicit ``reply_to`` given to ``request()`` is not carried across processes).
    """
    if not reply.recipient.startswith(f"{INBOX_NAMESPACE}."):
        return reply, None
    return reply.model_copy(update={"recipient": request.sender}), reply.recipient


def not_running(envelope: Envelope) -> Envelope:
    """The ``no_route`` reply across processes: say the recipient is down, not just unheard.

    Registrations expire ``presence_ttl`` after a process stops heartbeating, so no live
    route means no process runs that MAD now; the caller learns it at once, by name.
    """
    return envelope.error_reply(
        ErrorInfo(
            code="no_route",
            message=(
                f"{envelope.recipient!r} is not running: no live process serves it on this bus "
                "(it is down, was never started, or is restarting)"
            ),
            retryable=True,
        ),
        sender="bus",
    )
