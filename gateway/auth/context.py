"""Everything authentication needs at request time, built once per gateway from its settings."""

from __future__ import annotations

from dataclasses import dataclass, field

from aiohttp import web

from bus.base import Bus
from gateway.auth.audit import AuthAudit
from gateway.auth.blocklist import BlockList
from gateway.auth.login_codes import LoginCodes
from gateway.auth.ratelimit import RateLimiter
from gateway.auth.sessions import SessionStore, cookie_name
from gateway.auth.store import AuthStore
from mads.core.settings import GatewaySection


@dataclass
class AuthContext:
    store: AuthStore
    sessions: SessionStore
    audit: AuthAudit
    blocks: BlockList
    per_ip: RateLimiter
    per_principal: RateLimiter
    login: RateLimiter
    tls: bool
    codes: LoginCodes = field(default_factory=LoginCodes)
    trusted_origins: frozenset[str] = field(default_factory=frozenset)
    hsts_max_age: int = 0
    own_origin: str | None = None
    """``scheme://host:port`` the gateway is bound to (set at start; None for a wildcard bind address)."""

    @property
    def allowed_origins(self) -> frozenset[str]:
        """Browser origins that may open the WebSocket: the gateway's own and the configured trusted ones."""
        if self.own_origin is None:
            return self.trusted_origins
        return self.trusted_origins | {self.own_origin}

    @property
    def cookie(self) -> str:
        return cookie_name(self.tls)

    @property
    def limiters(self) -> dict[str, RateLimiter]:
        """Every limiter by scope name, e.g. to swap in a test clock."""
        return {"ip": self.per_ip, "principal": self.per_principal, "login": self.login}

    @classmethod
    def build(cls, cfg: GatewaySection, bus: Bus, store: AuthStore) -> AuthContext:
        return cls(
            store=store,
            sessions=SessionStore(cfg.session_idle_timeout, cfg.session_max_age, cfg.max_sessions),
            audit=AuthAudit(bus, cfg.token_use_event_interval),
            blocks=BlockList(),
            per_ip=RateLimiter(cfg.rate_per_ip, cfg.burst_per_ip),
            per_principal=RateLimiter(cfg.rate_per_principal, cfg.burst_per_principal),
            login=RateLimiter(cfg.login_rate_per_ip, cfg.login_burst_per_ip),
            tls=cfg.tls_cert is not None and cfg.tls_key is not None,
            trusted_origins=frozenset(o.rstrip("/").lower() for o in cfg.trusted_origins),
            hsts_max_age=cfg.hsts_max_age,
        )


AUTH_KEY = web.AppKey("auth", AuthContext)


def auth_of(request: web.Request) -> AuthContext:
    return request.app[AUTH_KEY]
