"""What a store reports about itself: can it write, how much space is left, what went wrong last.

A MAD that owns a database keeps one :class:`StoreHealth` per file and publishes a
:class:`StorageEvent` on ``events.storage`` whenever the state changes (a write refused, writing
again, damage found, loss found). The gateway keeps the latest state of every store for
``/healthz``; McNamara writes each event to the audit trail and raises an alert for every state
but ``writable``. Messages name the file and the fault, never stored content.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from mads.core.sqlite import free_bytes

STORAGE_TOPIC = "events.storage"
LOW_SPACE_BYTES = 64 * 1024 * 1024
"""Free space under which a writable store is reported ``low_space`` (still writing, soon not)."""

StoreState = Literal["writable", "low_space", "unwritable", "damaged", "lost"]


class StoreHealth(BaseModel):
    """One store's state as ``/healthz`` shows it."""

    model_config = ConfigDict(extra="forbid")

    store: str = Field(description="Which store: '<mad>/<file>'.")
    path: str
    state: StoreState = "writable"
    writable: bool = True
    free_bytes: int | None = None
    low_space: bool = False
    last_error: str | None = None
    last_error_at: datetime | None = None
    refused: int = Field(default=0, description="Messages refused (not stored, their senders told) since start.")
    damaged: int = Field(default=0, description="Rows found damaged (checksum or integrity) since start.")


class StorageReport(BaseModel):
    """What a store-owning MAD's ``storage`` tool answers: one entry per database file."""

    stores: list[StoreHealth]


class StorageEvent(BaseModel):
    """Published on ``events.storage`` when a store's state changes."""

    model_config = ConfigDict(extra="forbid")

    store: str
    path: str
    state: StoreState
    message: str = Field(max_length=2000)
    free_bytes: int | None = None
    details: dict[str, int | str | list[str]] = Field(default_factory=dict)


class HealthTracker:
    """Keeps one store's :class:`StoreHealth` current; ``refresh`` re-reads the free space."""

    def __init__(self, store: str, path: Path, *, low_space_bytes: int = LOW_SPACE_BYTES) -> None:
        self.path = path
        self.low_space_bytes = low_space_bytes
        self.health = StoreHealth(store=store, path=str(path))

    def refresh(self) -> StoreHealth:
        try:
            free = free_bytes(self.path)
        except OSError:
            free = None
        health = self.health
        health.free_bytes = free
        health.low_space = free is not None and free < self.low_space_bytes
        if health.writable and health.state in ("writable", "low_space"):
            health.state = "low_space" if health.low_space else "writable"
        return health

    def failed(self, error: str) -> bool:
        """A write was refused; True if the store was writable until now (the state changed)."""
        changed = self.health.writable
        self.health.writable = False
        self.health.state = "unwritable"
        self.health.last_error = error
        self.health.last_error_at = datetime.now(UTC)
        return changed

    def recovered(self) -> bool:
        """A write succeeded; True if the store could not write until now."""
        changed = not self.health.writable
        self.health.writable = True
        if self.health.state == "unwritable":
            self.health.state = "writable"
        self.refresh()
        return changed

    def event(self, message: str, **details: int | str | list[str]) -> StorageEvent:
        health = self.refresh()
        return StorageEvent(
            store=health.store,
            path=health.path,
            state=health.state,
            message=message[:2000],
            free_bytes=health.free_bytes,
            details=details,
        )
