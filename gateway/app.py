"""The gateway: one aiohttp application in front of the bus — JSON API, stream socket, chat page.

Composed with the host by the entry point (:mod:`mad_ecosystem.app`) in the process where Grace runs. ``start`` opens
the auth store, binds (port 0 picks a free port), prints the first-run login link if
nobody can sign in yet, and returns the real URL; ``stop`` stops accepting, lets
in-flight requests finish (up to the ecosystem's drain timeout, then answers them
503), and closes stream sockets with the going-away code.
"""

from __future__ import annotations

import logging
import ssl
from pathlib import Path

from aiohttp import WSCloseCode, web

from bus.base import Bus
from gateway.auth.context import AUTH_KEY, AuthContext
from gateway.auth.guard import guard_middleware
from gateway.auth.store import AuthStore, Issued, Role, auth_dir
from gateway.bootstrap import first_run, issue_token
from gateway.drain import DRAIN_KEY, Drain, drain_middleware
from gateway.errors import BODY_TIMEOUT_KEY, MAX_BODY_KEY, error_middleware
from gateway.mad_client import MadClient
from gateway.mcp_door import McpDoor
from gateway.redaction import REDACTOR_KEY, redaction_middleware
from gateway.routes import alerts, api, mcp, metrics, openai, pages, regeneration, session, stream, voice
from gateway.security_headers import set_security_headers
from gateway.server import GatewayRunner
from gateway.socket_watch import WATCH_KEY, SocketWatch
from gateway.state import STATE_KEY, GatewayState
from gateway.storage_health import StorageHealth
from mads.core.directory import Directory
from mads.core.redaction import SecretRedactor
from mads.core.settings import Settings
from regeneration.service import RegenerationService

log = logging.getLogger(__name__)

SOCKET_FLUSH_TIMEOUT = 2.0
WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", ""})
"""Bind addresses that name no origin a browser could be on."""


class Gateway:
    def __init__(
        self,
        settings: Settings,
        bus: Bus,
        directory: Directory,
        data_dir: Path,
        redactor: SecretRedactor,
        *,
        regeneration: RegenerationService | None = None,
    ) -> None:
        self.settings = settings
        self.redactor = redactor
        self.data_dir = data_dir
        self.drain = Drain()
        self.state = GatewayState(
            settings=settings,
            bus=bus,
            directory=directory,
            client=MadClient(bus, self.drain, settings.gateway.reply_timeout),
            drain=self.drain,
            storage=StorageHealth(bus),
            regeneration=regeneration,
        )
        self.auth = AuthContext.build(settings.gateway, bus, AuthStore(auth_dir(data_dir)))
        self.watch = SocketWatch(self.auth)
        self.mcp = McpDoor(self.state)
        self.app = self.build_app()
        self._runner: GatewayRunner | None = None
        self.url: str | None = None

    def build_app(self) -> web.Application:
        app = web.Application(
            middlewares=[redaction_middleware, error_middleware, guard_middleware, drain_middleware],
            client_max_size=self.settings.gateway.max_body_bytes,
        )
        app[MAX_BODY_KEY] = self.settings.gateway.max_body_bytes
        app[BODY_TIMEOUT_KEY] = self.settings.gateway.body_timeout
        app[STATE_KEY] = self.state
        app[DRAIN_KEY] = self.drain
        app[AUTH_KEY] = self.auth
        app[WATCH_KEY] = self.watch
        app[REDACTOR_KEY] = self.redactor
        app[mcp.MCP_DOOR_KEY] = self.mcp
        app.on_response_prepare.append(set_security_headers)
        for table in (
            api.routes,
            session.routes,
            alerts.routes,
            metrics.routes,
            stream.routes,
            openai.routes,
            mcp.routes,
            voice.routes,
            regeneration.routes,
            pages.routes,
        ):
            app.add_routes(table)
        return app

    def _ssl_context(self) -> ssl.SSLContext | None:
        cfg = self.settings.gateway
        if cfg.tls_cert is None or cfg.tls_key is None:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(cfg.tls_cert, cfg.tls_key)
        return context

    async def issue_token(self, name: str, role: Role = "user", expires_days: int | None = None) -> Issued:
        """Create a token from inside the running gateway (audited like the CLI's)."""
        auth = self.auth
        return await issue_token(auth.store, auth.audit, name, role, actor="gateway", expires_days=expires_days)

    async def start(self) -> str:
        """Open the auth store, bind and serve; returns the URL with the port actually bound."""
        cfg = self.settings.gateway
        context = self._ssl_context()
        await self.auth.store.open()
        await self.auth.blocks.follow(self.state.bus)
        await self.state.client.follow_storage()
        self.watch.start()
        # handler_cancellation: a client that goes away cancels its handler, and with it (MadClient.send)
        # the work its request started on the bus.
        handler_args = {
            "access_log": None,
            "keepalive_timeout": cfg.idle_timeout,
            "header_timeout": cfg.header_timeout,
            "hsts_max_age": cfg.hsts_max_age if context is not None else None,
        }
        self._runner = GatewayRunner(
            self.app, handler_args=handler_args, shutdown_timeout=5.0, handler_cancellation=True
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, cfg.host, cfg.port, ssl_context=context)
        try:
            await site.start()
        except OSError as exc:
            await self._release()
            raise OSError(exc.errno, f"gateway cannot listen on {cfg.host}:{cfg.port}: {exc.strerror}") from None
        port = self._runner.addresses[0][1]
        host = f"[{cfg.host}]" if ":" in cfg.host else cfg.host
        self.url = f"{'https' if context else 'http'}://{host}:{port}/"
        self.auth.own_origin = None if cfg.host in WILDCARD_HOSTS else self.url.rstrip("/").lower()
        if self.auth.own_origin is None and not self.auth.trusted_origins:
            log.warning(
                "gateway bound to %s: browsers can open the chat socket only from [gateway] trusted_origins, "
                "which is empty",
                cfg.host,
            )
        log.info("gateway listening on %s", self.url)
        try:
            await first_run(self.auth.store, self.auth.audit, self.auth.codes, self.url)
        except BaseException:
            await self._release()
            raise
        return self.url

    async def _release(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
        await self.watch.stop()
        await self.mcp.stop()
        await self.state.client.stop()
        await self.auth.blocks.stop()
        await self.auth.store.close()

    async def stop(self) -> None:
        """Stop accepting, drain in-flight requests, close sockets with going-away, release the port."""
        runner = self._runner
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
        await self._release()
