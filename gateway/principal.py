"""Who is making a request: a request-scoped principal set by middleware.

Until authentication arrives every request acts as ``local``. Authentication plugs in
by replacing the resolver (``app[RESOLVER_KEY]``): it returns a principal name, or
``None`` to refuse the request with 401. Handlers only ever read
:func:`principal_of`, so they need no change when real identities appear.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable

from aiohttp import web

from gateway.errors import ApiError, Handler

LOCAL = "local"
PRINCIPAL_KEY = web.RequestKey("principal", str)
Resolver = Callable[[web.Request], Awaitable[str | None]]
RESOLVER_KEY = web.AppKey("principal_resolver", Resolver)
_PRINCIPAL = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")


async def local_principal(request: web.Request) -> str | None:
    """The single-user default: everything is done as ``local``."""
    return LOCAL


@web.middleware
async def principal_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path == "/healthz":
        return await handler(request)
    name = await request.app[RESOLVER_KEY](request)
    if name is None:
        raise ApiError(401, "unauthorized", "authentication required")
    if not _PRINCIPAL.match(name):
        raise ApiError(401, "unauthorized", "principal name is not usable as a bus address")
    request[PRINCIPAL_KEY] = name
    return await handler(request)


def principal_of(request: web.Request) -> str:
    return request.get(PRINCIPAL_KEY, LOCAL)


def user_address(principal: str) -> str:
    """The bus address a person's messages come from (``user.<principal>``)."""
    return f"user.{principal}"
