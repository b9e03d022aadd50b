"""Signing in from the browser, with a token or a first-run link's one-time code: a session cookie plus a CSRF
token, and signing out.

The token is checked against the auth store; failures are published for McNamara's
brute-force rule and answered with one message whatever the reason (no hint whether
a token exists). A success is written to the audit trail before the session exists:
if it cannot be recorded, nobody is signed in.
"""

from __future__ import annotations

from aiohttp import web

from bus.topics import AuthEvent
from gateway.auth.context import AuthContext, auth_of
from gateway.auth.guard import client_ip, rate_limited
from gateway.auth.store import TokenRejected, Verified
from gateway.errors import ApiError
from gateway.principal import identity_of
from gateway.schemas import EmptyBody, LoginRequest, SessionInfo, read_body
from gateway.socket_watch import WATCH_KEY

routes = web.RouteTableDef()

LOGIN_ROUTE = "/api/session"


async def _failed(auth: AuthContext, ip: str, reason: str, principal: str | None = None) -> None:
    await auth.audit.publish(
        AuthEvent(
            outcome="denied" if principal else "failure",
            method="login",
            principal=principal,
            ip=ip,
            reason=reason,
            route=LOGIN_ROUTE,
        )
    )


async def _verify(auth: AuthContext, token: str, ip: str) -> Verified:
    try:
        return await auth.store.verify(token)
    except TokenRejected as rejected:
        await _failed(auth, ip, f"token {rejected.reason}", rejected.principal)
        raise ApiError(401, "invalid_token", "that token is not valid (unknown, revoked or expired)") from None


async def _redeem(auth: AuthContext, code: str, ip: str) -> Verified:
    """The token a one-time code stands for; the code is spent whatever happens next."""
    refused = ApiError(
        401,
        "invalid_code",
        "that sign-in link was already used or has expired; sign in with an access token instead",
    )
    token_id = auth.codes.redeem(code)
    if token_id is None:
        await _failed(auth, ip, "login code unknown, used or expired")
        raise refused
    try:
        return await auth.store.still_valid(token_id)
    except TokenRejected as rejected:
        await _failed(auth, ip, f"login code's token {rejected.reason}", rejected.principal)
        raise refused from None


@routes.post(LOGIN_ROUTE)
async def login(request: web.Request) -> web.Response:
    auth = auth_of(request)
    ip = client_ip(request)
    retry = auth.login.take(ip)
    if retry:
        raise rate_limited("login", retry)
    body = await read_body(request, LoginRequest)
    if body.code is not None:
        verified = await _redeem(auth, body.code, ip)
        method = "login_code"
    else:
        assert body.token is not None
        verified = await _verify(auth, body.token, ip)
        method = "login"
    await auth.audit.record(
        "auth.login",
        verified.principal,
        "login",
        {"ip": ip, "route": LOGIN_ROUTE, "method": method, "token_id": verified.token_id},
    )
    previous = auth.sessions.get(request.cookies.get(auth.cookie, "")) if request.cookies.get(auth.cookie) else None
    if previous is not None:
        auth.sessions.close(previous)
    cookie, session = auth.sessions.open(verified.principal, verified.role, verified.token_id)
    max_age = auth.sessions.remaining(session)
    info = SessionInfo(
        principal=session.principal, role=session.role, via="session", csrf_token=session.csrf, expires_in=max_age
    )
    response = web.json_response(info.model_dump(mode="json"))
    response.set_cookie(
        auth.cookie, cookie, max_age=int(max_age), path="/", httponly=True, secure=auth.tls, samesite="Strict"
    )
    return response


@routes.get(LOGIN_ROUTE)
async def current(request: web.Request) -> web.Response:
    identity = identity_of(request)
    session = identity.session
    auth = auth_of(request)
    info = SessionInfo(
        principal=identity.principal,
        role=identity.role,
        via=identity.via,
        csrf_token=session.csrf if session else None,
        expires_in=auth.sessions.remaining(session) if session else None,
    )
    return web.json_response(info.model_dump(mode="json"))


@routes.post(f"{LOGIN_ROUTE}/logout")
async def logout(request: web.Request) -> web.Response:
    identity = identity_of(request)
    await read_body(request, EmptyBody)
    auth = auth_of(request)
    response = web.Response(status=204)
    if identity.session is not None:
        auth.sessions.close(identity.session)
        request.app[WATCH_KEY].session_ended(identity.session)
        response.del_cookie(auth.cookie, path="/", secure=auth.tls, httponly=True, samesite="Strict")
    return response
