"""The work in progress: whom it serves, which turn it belongs to, how it got here, until when.

Every envelope carries its :class:`~bus.envelope.Principal`, turn, chain and deadline. While a
MAD handles one, :func:`working_on` makes them the *current work* of the task (a context
variable, so tasks the handler starts inherit it), and everything the MAD sends from there —
requests, events, stream deltas — carries the same principal and turn, its chain extended by
the MAD, and a deadline no later than the one it was given. Nothing in a tool's arguments
or an LLM's output can change them: the principal is not a parameter of any call.

Two doors change the current work, both used only by runtime or MAD *code*, never reachable
by an LLM:

- :func:`acting_for` — resume work for a recorded principal (a story the user filed, after a
  restart): a new chain, the given deadline.
- :func:`as_system` — a MAD's own upkeep inside someone's turn (Fiedler reading the provider
  key it needs): the principal becomes ``system``, the turn and deadline stay. Receivers
  that check people (Turing, McNamara) then judge the MAD alone.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from bus.envelope import MAX_CHAIN, SYSTEM, Envelope, Principal


@dataclass(frozen=True, slots=True)
class Work:
    """The authority and limits of the work a task is doing."""

    principal: Principal = SYSTEM
    turn: str | None = None
    chain: tuple[str, ...] = ()
    """The MADs the work came through, oldest first (the sender of the envelope being handled last)."""
    deadline: datetime | None = None
    conversation_id: str | None = field(default=None)

    def remaining(self, now: datetime | None = None) -> float | None:
        if self.deadline is None:
            return None
        return max(0.0, (self.deadline - (now or datetime.now(UTC))).total_seconds())

    def deadline_within(self, seconds: float) -> datetime:
        """``now + seconds``, but never later than this work's own deadline."""
        mine = datetime.now(UTC) + timedelta(seconds=seconds)
        return mine if self.deadline is None or mine < self.deadline else self.deadline

    def onward(self, sender: str) -> tuple[str, ...]:
        """The chain of an envelope ``sender`` sends as part of this work."""
        if self.chain and self.chain[-1] == sender:
            return self.chain
        return (*self.chain, sender)


PERSON_PREFIX = "user."
"""Addresses of people (``user.alice``): the gateway sends as them; they are not MADs of a chain."""
SYSTEM_WORK = Work()
_current: contextvars.ContextVar[Work] = contextvars.ContextVar("mad_work", default=SYSTEM_WORK)


class ChainTooLong(Exception):
    """The work passed through more MADs than :data:`~bus.envelope.MAX_CHAIN`: a loop, refused."""


def current() -> Work:
    """The work the running task is doing (``system`` work with no deadline outside any handler)."""
    return _current.get()


def work_of(envelope: Envelope) -> Work:
    chain = envelope.chain
    if not envelope.sender.startswith(PERSON_PREFIX) and (not chain or chain[-1] != envelope.sender):
        chain = (*chain, envelope.sender)
    return Work(
        principal=envelope.principal,
        turn=envelope.turn,
        chain=chain[-MAX_CHAIN:],
        deadline=envelope.deadline,
        conversation_id=envelope.conversation_id,
    )


@contextlib.contextmanager
def working_on(envelope: Envelope) -> Iterator[Work]:
    """Handle ``envelope``: its principal, turn, chain and deadline become the current work."""
    work = work_of(envelope)
    token = _current.set(work)
    try:
        yield work
    finally:
        _current.reset(token)


@contextlib.contextmanager
def acting_for(principal: Principal, *, turn: str | None = None, deadline: datetime | None = None) -> Iterator[Work]:
    """Resume work for a recorded ``principal`` (a story it filed), outside any request."""
    token = _current.set(Work(principal=principal, turn=turn, deadline=deadline))
    try:
        yield _current.get()
    finally:
        _current.reset(token)


@contextlib.contextmanager
def as_system() -> Iterator[Work]:
    """A MAD's own upkeep inside someone's work: principal ``system``, same turn, chain and deadline."""
    token = _current.set(replace(current(), principal=SYSTEM))
    try:
        yield _current.get()
    finally:
        _current.reset(token)


def check_chain(chain: tuple[str, ...]) -> None:
    if len(chain) > MAX_CHAIN:
        path = " → ".join(chain[:4]) + " → … → " + " → ".join(chain[-3:])
        raise ChainTooLong(f"this work passed through {len(chain)} MADs ({path}); at most {MAX_CHAIN}")
