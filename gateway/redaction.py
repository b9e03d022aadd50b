"""The last filter before bytes leave the gateway: known secrets are replaced by ``[REDACTED]``.

Every MAD already scrubs what it produces, but the gateway is the one door, so it
checks once more: every JSON, text and HTML body and every WebSocket frame passes
through the process-wide scrub hook (installed by the host from Turing's redactor).
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from bus.base import ErrorHook

_TEXTUAL = ("application/json", "text/plain", "text/html")


@web.middleware
async def redaction_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    response = await handler(request)
    if isinstance(response, web.Response) and response.body is not None and response.content_type in _TEXTUAL:
        text = response.text
        scrubbed = ErrorHook.scrub(text)
        if scrubbed != text:
            response.text = scrubbed
    return response


def scrub_frame(frame: dict[str, Any]) -> str:
    """A WebSocket frame as JSON text, scrubbed (deltas are scrubbed whole, not chunk by chunk)."""
    return ErrorHook.scrub(json.dumps(frame))
