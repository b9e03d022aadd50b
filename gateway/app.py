"""The gateway: one aiohttp application in front of the bus — JSON API, stream socket, chat page.

Started by :class:`mads.host.Host` in the process where Grace runs. ``start`` binds
(port 0 picks a free port) and returns the real URL; ``stop`` stops accepting, lets
in-flight requests finish (up to the ecosystem's drain timeout, then answers them
503), and closes stream sockets with the going-away code.
"""

from __future__ import annotations

import logging
import ssl
from pathlib import Path

from aiohttp import WSCloseCode, web

from bus.base import Bus
from gateway.drain import DRAIN_KEY, Drain, drain_middleware
from gateway.errors import MAX_BODY_KEY, error_middleware
from gateway.mad_client import MadClient
from gateway.principal import RESOLVER_KEY, local_principal, principal_middleware
from gateway.routes import api, pages, stream
from gateway.state import STATE_KEY, GatewayState
from mads.directory import Directory
from mads.settings import Settings

log = logging.getLogger(__name__)

SOCKET_FLUSH_TIMEOUT = 2.0


class Gateway:
    def __init__(self, settings: Settings, bus: Bus, directory: Directory, data_dir: Path) -> None:
        self.settings = settings
        self.data_dir = data_dir
        self.drain = Drain()
        self.state = GatewayState(
            settings=settings,
            bus=bus,
            directory=directory,
            client=MadClient(bus, self.drain, settings.gateway.reply_timeout),
            drain=self.drain,
        )
        self.app = self.build_app()
        self._runner: web.AppRunner | None = None
        self.url: str | None = None

    def build_app(self) -> web.Application:
        app = web.Application(
            middlewares=[error_middleware, principal_middleware, drain_middleware],
            client_max_size=self.settings.gateway.max_body_bytes,
        )
        app[MAX_BODY_KEY] = self.settings.gateway.max_body_bytes
        app[STATE_KEY] = self.state
        app[DRAIN_KEY] = self.drain
        app[RESOLVER_KEY] = local_principal
        app.add_routes(api.routes)
        app.add_routes(stream.routes)
        app.add_routes(pages.routes)
        return app

    def _ssl_context(self) -> ssl.SSLContext | None:
        cfg = self.settings.gateway
        if cfg.tls_cert is None or cfg.tls_key is None:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cfg.tls_cert, cfg.tls_key)
        return context

    async def start(self) -> str:
        """Bind and serve; returns the URL with the port actually bound."""
        cfg = self.settings.gateway
        context = self._ssl_context()
        self._runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=5.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, cfg.host, cfg.port, ssl_context=context)
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            self._runner = None
            raise OSError(exc.errno, f"gateway cannot listen on {cfg.host}:{cfg.port}: {exc.strerror}") from None
        port = self._runner.addresses[0][1]
        host = f"[{cfg.host}]" if ":" in cfg.host else cfg.host
        self.url = f"{'https' if context else 'http'}://{host}:{port}/"
        log.info("gateway listening on %s", self.url)
        return self.url

    async def stop(self) -> None:
        """Stop accepting, drain in-flight requests, close sockets with going-away, release the port."""
        runner, self._runner = self._runner, None
        if runner is None:
            return
        self.drain.closing = True
        for site in list(runner.sites):
            await site.stop()
        if not await self.drain.close(self.settings.ecosystem.drain_timeout):
            log.warning("gateway: requests still in flight after the drain timeout were answered 503")
        for ws, outbox in list(self.state.sockets.items()):
            await outbox.flushed(SOCKET_FLUSH_TIMEOUT)
            await ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutting down")
        await runner.cleanup()
