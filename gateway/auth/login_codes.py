"""One-time sign-in codes: what the first-run link carries instead of a token.

A code is 32 random bytes, kept in memory only as its SHA-256, bound to one token
(the session it opens is that token's, so revoking the token ends it as usual), and
it is gone after one exchange (``POST /api/session {"code"}``) or after ``ttl``
seconds, whichever comes first. A link that leaks from a terminal's scrollback or
a shell history is therefore worthless once used, and never an API credential.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass

from gateway.auth.sessions import Clock

CODE_TTL = 1800.0
"""Seconds a first-run link stays valid if nobody uses it."""


@dataclass(frozen=True)
class PendingCode:
    token_id: str
    expires: float


def _key(code: str) -> str:
    return hashlib.sha256(code.encode("utf-8")).hexdigest()


class LoginCodes:
    def __init__(self, ttl: float = CODE_TTL, clock: Clock = time.monotonic) -> None:
        self.ttl = ttl
        self.clock = clock
        self._pending: dict[str, PendingCode] = {}

    def issue(self, token_id: str) -> str:
        """A new single-use code that signs in with ``token_id``; shown once, kept only hashed."""
        code = secrets.token_urlsafe(32)
        self._pending[_key(code)] = PendingCode(token_id, self.clock() + self.ttl)
        return code

    def redeem(self, code: str) -> str | None:
        """The token id the code stands for, consuming it; None if unknown, used or expired."""
        now = self.clock()
        for key in [k for k, p in self._pending.items() if p.expires <= now]:
            del self._pending[key]
        pending = self._pending.pop(_key(code), None)
        return pending.token_id if pending is not None else None
