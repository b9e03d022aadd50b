"""Security headers on every response the gateway sends: pages, API, errors, static files, upgrades.

Set in ``on_response_prepare`` rather than a middleware so nothing escapes them,
not even responses aiohttp builds itself (static files, redirects, 404s). The CSP
allows no inline script or style, so an injected ``<script>`` has nowhere to run. The
microphone is allowed for the page's own origin only (voice input); camera and location never.
"""

from __future__ import annotations

from aiohttp import web

from gateway.auth.context import AUTH_KEY

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'; object-src 'none'"
)
ARTIFACT_CSP = "default-src 'none'; style-src 'unsafe-inline'; sandbox"
"""For files MADs produced (an SVG chart, say): nothing in them runs, even opened on their own."""
STATIC_PREFIXES = ("/static/", "/public/")

BASE_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(self), geolocation=()",
}


SERVER = "mad-ecosystem"
"""The ``Server`` header: no software name or version to fingerprint."""


def security_headers(path: str, hsts_max_age: int | None) -> dict[str, str]:
    """Every header a response to ``path`` must carry (``hsts_max_age`` only with TLS)."""
    headers = dict(BASE_HEADERS)
    headers["Cache-Control"] = "no-cache" if path.startswith(STATIC_PREFIXES) else "no-store"
    if hsts_max_age:
        headers["Strict-Transport-Security"] = f"max-age={hsts_max_age}; includeSubDomains"
    headers["Server"] = SERVER
    return headers


async def set_security_headers(request: web.Request, response: web.StreamResponse) -> None:
    auth = request.app.get(AUTH_KEY)
    hsts = auth.hsts_max_age if auth is not None and auth.tls else None
    response.headers.update(security_headers(request.path, hsts))
    match = getattr(request, "_match_info", None)
    if match is not None and match.route.name == "artifact":
        response.headers["Content-Security-Policy"] = ARTIFACT_CSP
