"""What every route handler needs, stored once on the aiohttp application."""

from __future__ import annotations

from dataclasses import dataclass, field

from aiohttp import web

from bus.base import Bus
from gateway.drain import Drain
from gateway.mad_client import MadClient
from gateway.outbox import Outbox
from gateway.storage_health import StorageHealth
from mads.core.directory import Directory
from mads.core.settings import Settings
from regeneration.service import RegenerationService


@dataclass
class GatewayState:
    settings: Settings
    bus: Bus
    directory: Directory
    client: MadClient
    drain: Drain
    storage: StorageHealth
    sockets: dict[web.WebSocketResponse, Outbox] = field(default_factory=dict)
    """Open stream sockets and their outboxes, so stop can flush and close them."""
    mads_body: tuple[object, bytes] | None = None
    """The last ``GET /api/mads`` body and the directory state it shows (rebuilt when that changes)."""
    regeneration: RegenerationService | None = None
    """The ecosystem's regeneration runs (given by the entry point); None where this process has none."""


STATE_KEY = web.AppKey("gateway_state", GatewayState)


def state_of(request: web.Request) -> GatewayState:
    return request.app[STATE_KEY]
