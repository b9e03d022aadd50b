"""The last filter before bytes leave the gateway: known secrets are replaced by ``[REDACTED]``.

Every MAD already scrubs what it produces, but the gateway is the one door, so it
checks once more: every JSON, text and HTML body and every WebSocket frame passes
through the process's redactor, which the entry point hands to the gateway
(``app[REDACTOR_KEY]``, the one the host gave its bus and MADs).
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from mads.core.redaction import SecretRedactor

REDACTOR_KEY = web.AppKey("redactor", SecretRedactor)
_TEXTUAL = ("application/json", "text/plain", "text/html")


@web.middleware
async def redaction_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    response = await handler(request)
    if isinstance(response, web.Response) and response.body is not None and response.content_type in _TEXTUAL:
        text = response.text
        scrubbed = request.app[REDACTOR_KEY].redact(text)
        if scrubbed != text:
            response.text = scrubbed
    return response


def scrub_frame(redactor: SecretRedactor, frame: dict[str, Any]) -> str:
    """A WebSocket frame as JSON text, scrubbed (deltas are scrubbed whole, not chunk by chunk)."""
    return redactor.redact(json.dumps(frame))
