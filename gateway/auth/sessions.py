"""Browser sessions: random ids in an HttpOnly cookie, state kept server-side in memory.

The cookie carries 32 random bytes; the store is keyed by their SHA-256, so even a
memory dump does not hand out live cookies. Each session has an idle and an absolute
expiry and its own CSRF synchronizer token. Sessions end on logout, expiry, a
gateway restart, or revocation of the token they were opened with.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from gateway.auth.store import Role

Clock = Callable[[], float]
COOKIE = "mad_session"
SECURE_COOKIE = "__Host-mad_session"
"""With TLS the ``__Host-`` prefix makes browsers insist on Secure, Path=/ and no Domain."""


def cookie_name(tls: bool) -> str:
    return SECURE_COOKIE if tls else COOKIE


def _key(session_id: str) -> str:
    return hashlib.sha256(session_id.encode("utf-8")).hexdigest()


@dataclass
class Session:
    key: str
    principal: str
    role: Role
    token_id: str
    csrf: str
    created: float
    last_seen: float

    def csrf_matches(self, presented: str | None) -> bool:
        return presented is not None and hmac.compare_digest(presented.encode("utf-8"), self.csrf.encode("utf-8"))


class SessionStore:
    def __init__(self, idle_timeout: float, max_age: float, max_sessions: int, clock: Clock = time.monotonic) -> None:
        self.idle_timeout = idle_timeout
        self.max_age = max_age
        self.max_sessions = max_sessions
        self.clock = clock
        self._sessions: OrderedDict[str, Session] = OrderedDict()

    def open(self, principal: str, role: Role, token_id: str) -> tuple[str, Session]:
        """A new session; returns the cookie value (shown only to the browser) and the session."""
        session_id = secrets.token_urlsafe(32)
        now = self.clock()
        session = Session(
            key=_key(session_id),
            principal=principal,
            role=role,
            token_id=token_id,
            csrf=secrets.token_urlsafe(32),
            created=now,
            last_seen=now,
        )
        self._sessions[session.key] = session
        while len(self._sessions) > self.max_sessions:
            self._sessions.popitem(last=False)
        return session_id, session

    def _expired(self, session: Session, now: float) -> bool:
        return now - session.last_seen > self.idle_timeout or now - session.created > self.max_age

    def get(self, session_id: str) -> Session | None:
        """The live session for a cookie value (touching it), or None."""
        key = _key(session_id)
        session = self._sessions.get(key)
        if session is None:
            return None
        now = self.clock()
        if self._expired(session, now):
            del self._sessions[key]
            return None
        session.last_seen = now
        self._sessions.move_to_end(key)
        return session

    def alive(self, session: Session) -> bool:
        """Whether ``session`` is still open and unexpired (without touching it)."""
        return self._sessions.get(session.key) is session and not self._expired(session, self.clock())

    def touch(self, session: Session) -> bool:
        """Mark ``session`` as in use (a socket message); False if it has ended."""
        if not self.alive(session):
            self.close(session)
            return False
        session.last_seen = self.clock()
        self._sessions.move_to_end(session.key)
        return True

    def remaining(self, session: Session) -> float:
        """Seconds until the absolute expiry (the cookie's Max-Age)."""
        return max(0.0, session.created + self.max_age - self.clock())

    def close(self, session: Session) -> None:
        self._sessions.pop(session.key, None)

    def __len__(self) -> int:
        return len(self._sessions)
