"""The stores' state for ``/healthz``: asked of the MADs that own them, at most once a second.

Rogers and McNamara answer their ``storage`` tool with one :class:`~mads.core.store_health.StoreHealth`
per file (writable, free space, last write error, messages refused or audit records lost). A store that cannot write, or
a MAD that does not answer within ``TIMEOUT``, makes ``/healthz`` say ``degraded``. Paths stay
inside: the body names stores (``rogers/conversations.db``), not directories.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from pydantic import ValidationError

from bus.base import Bus, BusError
from bus.envelope import CommandPart, Envelope, Kind, deadline_in
from mads.core import names
from mads.core.store_health import StorageReport, StoreHealth

SENDER = "gateway"
TIMEOUT = 2.0
FRESH_S = 1.0
OWNERS = (names.ROGERS, names.MCNAMARA)
"""MADs asked for their stores' state."""


class StorageHealth:
    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self._cached: tuple[float, list[dict[str, Any]], bool] | None = None
        self._lock = asyncio.Lock()

    async def report(self, alive: set[str]) -> tuple[list[dict[str, Any]], bool]:
        """Each store's state (without its path) and whether every one can write."""
        async with self._lock:
            if self._cached is not None and time.monotonic() - self._cached[0] < FRESH_S:
                return self._cached[1], self._cached[2]
            stores: list[dict[str, Any]] = []
            healthy = True
            for owner in OWNERS:
                if owner not in alive:
                    continue
                found = await self._ask(owner)
                if found is None:
                    stores.append({"store": owner, "state": "unknown", "writable": None})
                    healthy = False
                    continue
                for health in found:
                    stores.append(health.model_dump(mode="json", exclude={"path"}))
                    healthy = healthy and health.writable and health.state in ("writable", "low_space")
            self._cached = (time.monotonic(), stores, healthy)
            return stores, healthy

    async def _ask(self, owner: str) -> list[StoreHealth] | None:
        with contextlib.suppress(BusError, TimeoutError, ValidationError):
            reply = await self.bus.request(
                Envelope(
                    sender=SENDER,
                    recipient=owner,
                    kind=Kind.REQUEST,
                    deadline=deadline_in(TIMEOUT),
                    content=[CommandPart(tool="storage")],
                )
            )
            if reply.error is None:
                return [store for value in reply.data() for store in StorageReport.model_validate(value).stores]
        return None
