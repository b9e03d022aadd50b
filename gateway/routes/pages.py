"""Grace's chat page, the login page, and their static assets (shipped in the package; no CDN, no inline code).

``/public`` holds only what the login page needs and is reachable signed out;
``/static`` (the chat app) and ``/`` need a session. Neither page embeds data: the
chat page fetches everything through the authenticated API.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
PUBLIC_DIR = STATIC_DIR / "public"

routes = web.RouteTableDef()


@routes.get("/")
async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC_DIR / "index.html")


@routes.get("/regeneration")
async def regeneration_page(request: web.Request) -> web.FileResponse:
    """The operator's page of regeneration runs waiting for approval (data through the API, like the chat)."""
    return web.FileResponse(STATIC_DIR / "regeneration.html")


@routes.get("/login")
async def login_page(request: web.Request) -> web.FileResponse:
    return web.FileResponse(PUBLIC_DIR / "login.html")


routes.static("/public", PUBLIC_DIR, append_version=False)
routes.static("/static", STATIC_DIR / "app", append_version=False)
