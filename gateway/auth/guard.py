"""The one gate every request passes: blocked IPs, rate limits, authentication, CSRF, WebSocket origin.

Order: a blocked IP is refused (403) before anything else; then the per-IP bucket
(429); public routes stop here. Everything else needs a bearer token
(``Authorization: Bearer mad_…``) or a session cookie; then the per-principal bucket;
then, for cookie sessions, a CSRF token on every state-changing method; and for a
WebSocket upgrade, an acceptable ``Origin``. A bearer token is an explicit
credential a browser never attaches by itself, so bearer requests need no CSRF token.
"""

from __future__ import annotations

import contextlib
import logging

from aiohttp import web

from bus.topics import AuthEvent
from gateway.auth.blocklist import normalise
from gateway.auth.context import AuthContext, auth_of
from gateway.auth.store import TokenRejected
from gateway.errors import ApiError, Handler
from gateway.principal import IDENTITY_KEY, Identity

log = logging.getLogger(__name__)

PUBLIC_ROUTES: frozenset[tuple[str, str]] = frozenset(
    {
        ("GET", "/healthz"),
        ("HEAD", "/healthz"),
        ("GET", "/login"),
        ("HEAD", "/login"),
        ("GET", "/public"),
        ("HEAD", "/public"),
        ("POST", "/api/session"),
    }
)
"""(method, route pattern) pairs reachable without credentials; none of them serves stored data.
``/public`` is the login page's static directory (``gateway/static/public``)."""

UNLIMITED = frozenset({"/healthz"})
"""Routes neither rate-limited nor refused for a blocked IP (liveness probes must keep working)."""

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CSRF_HEADER = "X-CSRF-Token"
BEARER_CHALLENGE = 'Bearer realm="mad-ecosystem"'
LOGIN_PATH = "/login"
PAGES = frozenset({"/", "/regeneration"})
"""Pages a signed-out browser is sent to the login page from."""


def route_pattern(request: web.Request) -> str | None:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else None


def is_public(request: web.Request) -> bool:
    return (request.method, route_pattern(request) or "") in PUBLIC_ROUTES


def client_ip(request: web.Request) -> str:
    """The peer address (proxies are not trusted: X-Forwarded-For is ignored)."""
    return normalise(request.remote or "0.0.0.0")


def rate_limited(scope: str, retry_after: int) -> ApiError:
    with contextlib.suppress(ImportError):
        from mads.core.telemetry import record_rate_limit_hit

        record_rate_limit_hit(scope)
    return ApiError(
        429,
        "too_many_requests",
        f"too many requests ({scope} limit); retry after {retry_after} s",
        headers={"Retry-After": str(retry_after)},
        retryable=True,
    )


def unauthorized(message: str, *, invalid: bool = False) -> ApiError:
    challenge = BEARER_CHALLENGE + (', error="invalid_token"' if invalid else "")
    return ApiError(401, "unauthorized", message, headers={"WWW-Authenticate": challenge})


def _origin_allowed(auth: AuthContext, origin: str) -> bool:
    """The gateway's own origin (from the address it is bound to) or a configured one: never the Host header,
    which the client chooses."""
    return origin.rstrip("/").lower() in auth.allowed_origins


async def _from_bearer(request: web.Request, auth: AuthContext, header: str) -> Identity:
    ip = client_ip(request)
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        await auth.audit.publish(
            AuthEvent(
                outcome="failure", method="token", ip=ip, reason="not a bearer credential", route=request.path[:500]
            )
        )
        raise unauthorized("the Authorization header must be 'Bearer <token>'", invalid=True)
    try:
        verified = await auth.store.verify(token)
    except TokenRejected as rejected:
        outcome = "denied" if rejected.principal else "failure"
        await auth.audit.publish(
            AuthEvent(
                outcome=outcome,
                method="token",
                principal=rejected.principal,
                ip=ip,
                reason=f"token {rejected.reason}",
                route=request.path[:500],
            )
        )
        raise unauthorized("the bearer token is not valid (unknown, revoked or expired)", invalid=True) from None
    if auth.audit.token_use_due(verified.token_id):
        await auth.store.touch(verified.token_id)
        await auth.audit.publish(
            AuthEvent(outcome="success", method="token", principal=verified.principal, ip=ip, route=request.path[:500])
        )
    return Identity(principal=verified.principal, role=verified.role, via="bearer", token_id=verified.token_id)


async def _from_cookie(auth: AuthContext, value: str) -> Identity | None:
    session = auth.sessions.get(value)
    if session is None:
        return None
    try:
        verified = await auth.store.still_valid(session.token_id)
    except TokenRejected:
        auth.sessions.close(session)
        return None
    return Identity(
        principal=verified.principal, role=verified.role, via="session", token_id=session.token_id, session=session
    )


async def authenticate(request: web.Request) -> Identity | None:
    """The caller's identity from a bearer token or a session cookie; None if they sent neither."""
    auth = auth_of(request)
    header = request.headers.get("Authorization")
    if header is not None:
        return await _from_bearer(request, auth, header)
    cookie = request.cookies.get(auth.cookie)
    if cookie:
        return await _from_cookie(auth, cookie)
    return None


def _wants_html(request: web.Request) -> bool:
    return request.method == "GET" and "text/html" in request.headers.get("Accept", "")


@web.middleware
async def guard_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    auth = auth_of(request)
    if request.path in UNLIMITED:
        return await handler(request)
    ip = client_ip(request)
    until = auth.blocks.blocked_until(ip)
    if until is not None:
        raise ApiError(
            403,
            "ip_blocked",
            f"requests from {ip} are blocked until {until.isoformat(timespec='seconds')} "
            "after repeated authentication failures",
        )
    retry = auth.per_ip.take(ip)
    if retry:
        raise rate_limited("ip", retry)
    if is_public(request):
        return await handler(request)
    identity = await authenticate(request)
    if identity is None:
        if request.path in PAGES and _wants_html(request):
            raise web.HTTPSeeOther(LOGIN_PATH)
        raise unauthorized("authentication required: send 'Authorization: Bearer <token>' or sign in at /login")
    retry = auth.per_principal.take(identity.principal)
    if retry:
        raise rate_limited("principal", retry)
    session = identity.session
    if (
        session is not None
        and request.method not in SAFE_METHODS
        and not session.csrf_matches(request.headers.get(CSRF_HEADER))
    ):
        raise ApiError(403, "csrf_failed", f"missing or wrong {CSRF_HEADER} header for this session")
    if request.headers.get("Upgrade", "").lower() == "websocket":
        origin = request.headers.get("Origin")
        if origin is None and identity.via == "session":
            raise ApiError(403, "origin_forbidden", "a WebSocket opened with a session cookie must send Origin")
        if origin is not None and not _origin_allowed(auth, origin):
            raise ApiError(403, "origin_forbidden", "this WebSocket origin is not allowed")
    request[IDENTITY_KEY] = identity
    return await handler(request)
