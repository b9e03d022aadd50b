"""The HTTP server under the aiohttp application: connection timeouts and aiohttp's own error responses.

aiohttp answers requests it cannot parse (a NUL in the path, an oversized header, TLS
sent to the plain port) itself, before any middleware or signal runs: by default as
``text/plain`` with ``Server: Python/… aiohttp/…``, none of our security headers, and a
logged traceback. :class:`GatewayRequestHandler` answers them like every other error
(the JSON error body, the security headers, no version banner) and logs one line.

It also cuts slow clients: a connection that starts a request has ``header_timeout``
seconds to finish its headers (one byte a second never gets there), and one that sends
nothing is closed after ``idle_timeout`` (aiohttp's keep-alive timer, which also runs
from the moment a connection opens). Bodies are bounded by ``body_timeout`` in
:func:`gateway.schemas.read_body`; upgraded sockets have their own heartbeat.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMethod, BadStatusLine, InvalidHeader, LineTooLong

from bus.envelope import ErrorInfo
from bus.ids import new_id
from gateway.errors import error_body
from gateway.security_headers import security_headers

log = logging.getLogger(__name__)

_REASONS: tuple[tuple[type[BaseException], str], ...] = (
    (LineTooLong, "the request line or a header is too long"),
    (BadHttpMethod, "not an HTTP request (or TLS sent to a plain HTTP port)"),
    (BadStatusLine, "the request line is malformed"),
    (InvalidHeader, "a header is malformed"),
)


def _reason(exc: BaseException | None) -> str:
    """What was wrong, in words that never echo the client's bytes."""
    for kind, reason in _REASONS:
        if isinstance(exc, kind):
            return reason
    return "the request could not be parsed"


class GatewayRequestHandler(web.RequestHandler):
    """aiohttp's per-connection protocol with a header timeout and errors in the gateway's shape."""

    def __init__(self, manager: web.Server, *, header_timeout: float, hsts_max_age: int | None, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._header_timeout = header_timeout
        self._hsts_max_age = hsts_max_age
        self._header_timer: asyncio.TimerHandle | None = None

    def _awaiting_request(self) -> bool:
        waiter = self._waiter
        return waiter is not None and not waiter.done()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if not self._awaiting_request():
            self._cancel_header_timer()
        elif self._header_timer is None and data:
            self._header_timer = asyncio.get_running_loop().call_later(self._header_timeout, self._headers_too_slow)

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if self._awaiting_request():
            log.info("closed a connection that took over %gs to send its request headers", self._header_timeout)
            self.force_close()

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def connection_lost(self, exc: BaseException | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)

    def handle_error(
        self, request: web.BaseRequest, status: int = 500, exc: BaseException | None = None, message: str | None = None
    ) -> web.StreamResponse:
        if request.writer.output_size > 0:
            raise ConnectionError("a response is already under way; cannot send an error response")
        if status >= 500:
            reference = new_id()
            log.error("internal error outside the handlers (reference %s)", reference, exc_info=exc)
            info = ErrorInfo(code="internal_error", message=f"internal error (reference {reference})")
        else:
            reason = _reason(exc)
            log.info("malformed HTTP request from %s answered %d: %s", request.remote, status, reason)
            info = ErrorInfo(code="bad_request", message=f"malformed HTTP request: {reason}")
        response = web.json_response(error_body(info), status=status)
        response.headers.update(security_headers("", self._hsts_max_age))
        response.force_close()
        return response


class GatewayServer(web.Server):
    """Builds a :class:`GatewayRequestHandler` for each connection."""

    def __init__(self, handler: Any, *, handler_args: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._handler_args = handler_args
        self._server_loop = asyncio.get_running_loop()

    def __call__(self) -> GatewayRequestHandler:
        return GatewayRequestHandler(self, loop=self._server_loop, **self._handler_args)


class GatewayRunner(web.AppRunner):
    """An AppRunner whose server speaks through :class:`GatewayRequestHandler`."""

    def __init__(self, app: web.Application, *, handler_args: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._handler_args = handler_args

    async def _make_server(self) -> web.Server:
        stock = await super()._make_server()
        return GatewayServer(
            stock.request_handler,
            request_factory=stock.request_factory,
            handler_cancellation=stock.handler_cancellation,
            handler_args=self._handler_args,
        )
