"""Local web servers on loopback for Marco's tests: pages, redirects, oversized, compressed, trickling and
non-HTML responses. ``hits`` counts requests per path, which is how tests prove Marco never connected."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

PAGE = """<!doctype html><html><head><title>Local page</title></head><body>
<h1>Hello from loopback</h1><div class="note">first note</div><p>Some <b>text</b>.</p>
<a href="/other">other page</a> <a href="https://example.org/x">external</a>
<script>var secret = 1;</script></body></html>"""
MALFORMED = "<html><head><title>Broken</title><body><div><p>unclosed <b>bold <i>and</div></span><a href='/x'>link"
TRICKLE_BYTES = 10_000


@dataclass
class Pages:
    """A loopback HTTP server; ``hits`` counts requests per path (proof of whether Marco connected)."""

    port: int = 0
    hits: Counter[str] = field(default_factory=Counter)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


def pages_app(pages: Pages) -> web.Application:
    @web.middleware
    async def count(request: web.Request, handler: Callable[[web.Request], Any]) -> web.StreamResponse:
        pages.hits[request.path] += 1
        return await handler(request)

    async def page(_: web.Request) -> web.Response:
        return web.Response(text=PAGE, content_type="text/html")

    async def redirect(request: web.Request) -> web.Response:
        return web.Response(status=int(request.query.get("status", "302")), headers={"Location": request.query["to"]})

    async def chain(request: web.Request) -> web.Response:
        left = int(request.match_info["n"])
        return web.Response(status=302, headers={"Location": f"/chain/{left - 1}" if left > 1 else "/page"})

    async def loop(_: web.Request) -> web.Response:
        return web.Response(status=301, headers={"Location": "/loop"})

    async def big(_: web.Request) -> web.Response:
        return web.Response(
            text="<html><body>" + "<p>filler</p>" * 300_000 + "</body></html>", content_type="text/html"
        )

    async def bomb(_: web.Request) -> web.Response:
        body = gzip.compress(b"<html><body>" + b"A" * 50_000_000, compresslevel=9)
        return web.Response(body=body, headers={"Content-Type": "text/html", "Content-Encoding": "gzip"})

    async def trickle(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/html"})
        await response.prepare(request)
        with contextlib.suppress(ConnectionError):
            for _ in range(TRICKLE_BYTES):
                await response.write(b"x")
                await asyncio.sleep(0.05)  # the behaviour under test: a server that trickles bytes
        return response

    async def typed(request: web.Request) -> web.Response:
        kind = request.match_info["kind"]
        bodies = {
            "json": (b'{"a": 1}', "application/json"),
            "binary": (b"\x89PNG\r\n\x1a\n", "image/png"),
            "octet": (b"\x00\x01", "application/octet-stream"),
            "text": (b"plain words\nsecond line", "text/plain"),
            "xhtml": (PAGE.encode(), "application/xhtml+xml"),
        }
        body, content_type = bodies[kind]
        return web.Response(body=body, content_type=content_type)

    async def malformed(_: web.Request) -> web.Response:
        return web.Response(text=MALFORMED, content_type="text/html")

    app = web.Application(middlewares=[count])
    app.router.add_get("/page", page)
    app.router.add_get("/other", page)
    app.router.add_get("/redirect", redirect)
    app.router.add_get("/chain/{n}", chain)
    app.router.add_get("/loop", loop)
    app.router.add_get("/big", big)
    app.router.add_get("/bomb", bomb)
    app.router.add_get("/trickle", trickle)
    app.router.add_get("/typed/{kind}", typed)
    app.router.add_get("/malformed", malformed)
    return app


@contextlib.asynccontextmanager
async def serve_pages() -> AsyncIterator[Pages]:
    pages = Pages()
    runner = web.AppRunner(pages_app(pages), shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    pages.port = runner.addresses[0][1]
    try:
        yield pages
    finally:
        await runner.cleanup()
