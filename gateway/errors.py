"""One JSON error shape for every failure the gateway reports, and the middleware that enforces it.

Every error body is ``{"error": {"code", "message", "fields": [{"field", "reason"}]}}`` so
clients branch on ``code`` and show ``fields`` next to the inputs. Under ``/v1/`` (the
OpenAI-compatible door) the same error also carries OpenAI's ``type`` and ``param``, the
shape the ``openai`` client and chat front ends read. Unexpected exceptions
are logged with a reference and answered with that reference only: no stack trace or
internal path ever leaves the process.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable

from aiohttp import web
from pydantic import ValidationError

from bus.envelope import ErrorInfo, FieldError, field_errors
from bus.ids import new_id

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    413: "payload_too_large",
    414: "uri_too_long",
    415: "unsupported_media_type",
    429: "too_many_requests",
}


class ApiError(Exception):
    """A failure with its HTTP status and typed body; raised anywhere inside a handler."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        fields: Iterable[FieldError] = (),
        headers: dict[str, str] | None = None,
        *,
        retryable: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.info = ErrorInfo(code=code, message=message, fields=list(fields), retryable=retryable)
        self.headers = headers

    @classmethod
    def invalid(cls, exc: ValidationError, where: str, code: str = "invalid_request") -> ApiError:
        """422 naming every bad field (prefixed ``body``/``query``/``path``) without echoing values."""
        fields = field_errors(exc, where)
        summary = "; ".join(f"{f.field}: {f.reason}" for f in fields[:5])
        return cls(422, code, f"validation failed: {summary}", fields)


def error_body(info: ErrorInfo) -> dict[str, object]:
    return {"error": info.model_dump(mode="json", include={"code", "message", "fields", "retryable"})}


OPENAI_PREFIX = "/v1/"
"""Routes answering errors in the OpenAI shape as well (see :func:`openai_error_body`)."""

_OPENAI_TYPES = {
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    429: "rate_limit_error",
}


def openai_error_type(status: int) -> str:
    """OpenAI's ``error.type`` for an HTTP status."""
    if status in _OPENAI_TYPES:
        return _OPENAI_TYPES[status]
    return "server_error" if status >= 500 else "invalid_request_error"


def openai_error_body(status: int, info: ErrorInfo) -> dict[str, object]:
    """OpenAI's error shape (``message``, ``type``, ``param``, ``code``) plus this gateway's ``fields`` and
    ``retryable``, which OpenAI clients ignore."""
    body = error_body(info)["error"]
    assert isinstance(body, dict)
    body["type"] = openai_error_type(status)
    body["param"] = info.fields[0].field if info.fields else None
    return {"error": body}


def error_response(
    status: int, info: ErrorInfo, headers: dict[str, str] | None = None, *, path: str = ""
) -> web.Response:
    body = openai_error_body(status, info) if path.startswith(OPENAI_PREFIX) else error_body(info)
    return web.json_response(body, status=status, headers=headers)


def _from_http(exc: web.HTTPException, request: web.Request) -> web.Response:
    status = exc.status
    code = _HTTP_CODES.get(status, "http_error")
    if status == 404:
        message = f"no route for {request.method} {request.path}"
    elif status == 405:
        allowed = exc.headers.get("Allow", "")
        message = f"{request.method} is not allowed on {request.path}" + (f" (allowed: {allowed})" if allowed else "")
    elif status == 413:
        limit = request.app[MAX_BODY_KEY]
        message = f"request body is larger than the limit of {limit} bytes"
        return error_response(
            status,
            ErrorInfo(code=code, message=message, fields=[FieldError(field="body", reason=message)]),
            path=request.path,
        )
    else:
        message = exc.reason or code
    headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
    return error_response(status, ErrorInfo(code=code, message=message), headers, path=request.path)


MAX_BODY_KEY = web.AppKey("max_body_bytes", int)
BODY_TIMEOUT_KEY = web.AppKey("body_timeout", float)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every failure into the JSON error body; never let a traceback out."""
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(exc.status, exc.info, exc.headers, path=request.path)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _from_http(exc, request)
    except Exception:
        reference = new_id()
        log.exception("unhandled error on %s %s (reference %s)", request.method, request.path, reference)
        info = ErrorInfo(code="internal_error", message=f"internal error (reference {reference})")
        return error_response(500, info, path=request.path)
