"""What Rogers acknowledged, per conversation, kept apart from Rogers's database: a running count and hash.

After every committed batch Rogers publishes, on ``events.storage_ledger``, the count of messages
stored in each conversation it touched and a running hash over their checksums (in the order they
were stored); McNamara writes it to the audit trail (``storage.ledger``). After a restart Rogers
asks McNamara for the latest entry of every conversation and compares it with what its file holds:
a truncated WAL or a rolled-back file shows as fewer messages (or a different hash) than were
acknowledged, and is reported as ``lost`` naming the conversations and how many are missing.
"""

from __future__ import annotations

import hashlib

from pydantic import BaseModel, ConfigDict, Field

LEDGER_TOPIC = "events.storage_ledger"
LEDGER_EVENT_TYPE = "storage.ledger"
GENESIS = ""
CHUNK = 12
"""Conversations per ledger event, so each audit record stays well under McNamara's detail limit."""


def advance(running: str, checksum: str) -> str:
    """The running hash after one more stored message (its checksum); 32 hex digits."""
    return hashlib.sha256(f"{running}:{checksum}".encode()).hexdigest()[:32]


class Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    count: int = Field(ge=0)
    hash: str = Field(max_length=64)


class LedgerEvent(BaseModel):
    model_config = ConfigDict(extra="forbid")

    conversations: dict[str, Entry]


class Ledger(BaseModel):
    """The latest entry of every conversation, as the audit trail has it."""

    conversations: dict[str, Entry] = Field(default_factory=dict)
