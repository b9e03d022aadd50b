"""Who is making a request: the request-scoped identity set by the authentication guard.

Handlers only ever read :func:`principal_of` (the name) or :func:`identity_of` (name,
role, how they authenticated), so they never look at tokens or cookies themselves.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from aiohttp import web

from bus.envelope import Principal
from gateway.auth.sessions import Session
from gateway.auth.store import Role
from gateway.errors import ApiError
from mads.core.authority import PERSON_PREFIX


@dataclass(frozen=True)
class Identity:
    principal: str
    role: Role
    via: Literal["bearer", "session"]
    token_id: str
    session: Session | None = None


IDENTITY_KEY = web.RequestKey("identity", Identity)


def identity_of(request: web.Request) -> Identity:
    identity = request.get(IDENTITY_KEY)
    if identity is None:
        raise ApiError(401, "unauthorized", "authentication required")
    return identity


def principal_of(request: web.Request) -> Principal:
    """The person a request serves, as every envelope the gateway sends for it carries them."""
    identity = identity_of(request)
    return Principal(kind=identity.role, name=identity.principal)


def require_operator(request: web.Request) -> Identity:
    identity = identity_of(request)
    if identity.role != "operator":
        raise ApiError(403, "forbidden", f"this needs the operator role; {identity.principal!r} is a {identity.role}")
    return identity


def user_address(principal: Principal) -> str:
    """The bus address a person's messages come from (``user.<name>``)."""
    return f"{PERSON_PREFIX}{principal.name}"
