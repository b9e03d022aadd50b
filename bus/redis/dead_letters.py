"""The dead-letter stream: entries no handler may see, kept with the reason.

An entry lands here when it is not a valid envelope (with the validation error) or
when it was delivered ``max_deliveries`` times without being acknowledged (its
handler keeps crashing its process). The API lists them for operators.
"""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict, Field

MAX_PAYLOAD = 65_536


class DeadLetter(BaseModel):
    """One dead entry, as read back from ``{prefix}:dead``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(description="id of the dead-letter entry itself")
    stream: str = Field(description="key of the stream the entry came from")
    group: str
    entry_id: str = Field(description="id the entry had in its stream")
    reason: str
    deliveries: int = Field(ge=0)
    payload: str = Field(description="the raw entry, decoded leniently and truncated")
    dead_at: datetime


def dead_fields(
    stream: str, group: str, entry_id: str, reason: str, deliveries: int, payload: bytes | None
) -> dict[str, str]:
    """The fields written for one dead letter (bounded: a huge poison entry must not double memory)."""
    raw = (payload or b"").decode("utf-8", errors="replace")[:MAX_PAYLOAD]
    return {
        "stream": stream,
        "group": group,
        "entry_id": entry_id,
        "reason": reason[:4000],
        "deliveries": str(deliveries),
        "payload": raw,
        "dead_at": datetime.now(UTC).isoformat(),
    }


def parse_dead(entry_id: bytes, fields: dict[bytes, bytes]) -> DeadLetter:
    text = {k.decode(): v.decode("utf-8", errors="replace") for k, v in fields.items()}
    return DeadLetter(id=entry_id.decode(), **text)
