"""The typed failures of MAD code: a tool's own refusal and a peer's error reply.

Both carry an :class:`~bus.envelope.ErrorInfo`, so whatever catches them answers with
a typed error, never a raw string. Their text is scrubbed of known secrets where it
leaves the MAD (``MAD.handle`` for replies, the Imperator for what it shows an LLM),
not here: the redactor is the MAD's, passed in through its context.
"""

from __future__ import annotations

from bus.envelope import ErrorInfo, FieldError


class ToolFailure(Exception):
    """Raised by a tool to answer with a typed error instead of a result."""

    def __init__(
        self, code: str, message: str, *, retryable: bool = False, fields: list[FieldError] | None = None
    ) -> None:
        super().__init__(message)
        self.error = ErrorInfo(code=code, message=message[:4000], retryable=retryable, fields=fields or [])


class RemoteError(Exception):
    """A peer answered with an error envelope."""

    def __init__(self, recipient: str, error: ErrorInfo) -> None:
        super().__init__(f"{recipient}: {error.code}: {error.message}")
        self.recipient = recipient
        self.error = error
