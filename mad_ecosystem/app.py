"""The ecosystem of one process: the host (bus, MADs, directory) and, where Grace runs, the gateway.

The host never imports the gateway and the gateway never builds a host: this module composes
them, so the floors stay one-way (gateway → runtime, host → MADs → runtime → infrastructure).
It also composes regeneration with them: every process follows approved regeneration runs and
reloads the approved MADs it runs (``host.reload``), and the gateway offers the runs to operators.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from gateway.app import Gateway
from mads.core.redaction import REDACTOR, SecretRedactor
from mads.core.settings import Settings
from mads.host import Host
from regeneration.service import RegenerationService

SOURCE = Path(__file__).resolve().parent.parent
"""The tree this process runs from: what a regeneration branches from and an approval merges into."""


class Ecosystem:
    """Start the host, then the gateway in front of it; stop in the reverse order."""

    def __init__(self, settings: Settings, *, redactor: SecretRedactor = REDACTOR, source: Path = SOURCE) -> None:
        self.settings = settings
        self.host = Host(settings, redactor=redactor)
        self.regeneration = RegenerationService(source, self.host.data_dir)
        self.gateway: Gateway | None = None
        self.url: str | None = None

    async def start(self) -> None:
        await self.host.start()
        try:
            host = self.host
            await self.regeneration.follow(host.reload, lambda: list(host.mads), host.process)
            if host.serves_gateway:
                self.gateway = Gateway(
                    self.settings,
                    host.bus,
                    host.directory,
                    host.data_dir,
                    host.redactor,
                    regeneration=self.regeneration,
                )
                self.url = await self.gateway.start()
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """The gateway stops taking requests and drains first; then the host drains the bus and closes storage."""
        gateway, self.gateway = self.gateway, None
        try:
            if gateway is not None:
                await gateway.stop()
        finally:
            try:
                await self.regeneration.close()
            finally:
                await self.host.stop()

    def describe(self) -> str:
        return self.host.describe(self.url)


@contextlib.asynccontextmanager
async def started(settings: Settings, *, redactor: SecretRedactor = REDACTOR) -> AsyncIterator[Ecosystem]:
    """An :class:`Ecosystem` started for the duration of the block."""
    ecosystem = Ecosystem(settings, redactor=redactor)
    await ecosystem.start()
    try:
        yield ecosystem
    finally:
        await ecosystem.stop()
