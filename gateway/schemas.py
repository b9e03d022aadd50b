"""Request and response models of the gateway's JSON API (unknown fields are errors).

Bodies, query strings and WebSocket frames are all validated here, so a misspelt
field is a 422 naming it rather than silently ignored input.
"""

from __future__ import annotations

import asyncio
import re
from datetime import datetime
from typing import Any, Literal, TypeVar

from aiohttp import web
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    ValidationError,
    field_validator,
    model_validator,
)

from bus.envelope import ErrorInfo, FieldError
from gateway.errors import BODY_TIMEOUT_KEY, MAX_BODY_KEY, ApiError
from gateway.json_input import JsonInputError, decode_json
from mads.core.artifacts import ArtifactRef

MAX_MESSAGE_TEXT = 100_000
CONVERSATION_ID_PATTERN = r"^[A-Za-z0-9_\-]{1,64}$"

M = TypeVar("M", bound=BaseModel)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CreateConversation(Strict):
    title: str | None = Field(default=None, min_length=1, max_length=200)


class PostMessage(Strict):
    text: str = Field(min_length=1, max_length=MAX_MESSAGE_TEXT)

    @field_validator("text")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must contain something other than whitespace")
        return value


class PageQuery(Strict):
    cursor: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="Opaque: the next_cursor of the previous page, as returned; any other value is 422 (query.cursor).",
    )
    limit: int = Field(default=50, ge=1, le=200)


class HistoryQuery(PageQuery):
    direction: Literal["forward", "backward"] = "forward"


class ConversationPath(Strict):
    conversation_id: str = Field(pattern=CONVERSATION_ID_PATTERN)


class ArtifactPath(Strict):
    conversation_id: str = Field(pattern=CONVERSATION_ID_PATTERN)
    artifact_id: str = Field(pattern=r"^[0-9a-f]{64}$", description="the artifact's id (SHA-256 of its bytes)")


IDEMPOTENCY_KEY_PATTERN = r"^[A-Za-z0-9_\-.:]{1,128}$"
IDEMPOTENCY_HEADER = "Idempotency-Key"


class MessageFrame(Strict):
    """What a browser sends on the stream socket to post a message."""

    type: Literal["message"]
    client_id: str | None = Field(default=None, max_length=64, description="Echoed back on the reply or error frame.")
    text: str = Field(min_length=1, max_length=MAX_MESSAGE_TEXT)
    idempotency_key: str | None = Field(
        default=None,
        pattern=IDEMPOTENCY_KEY_PATTERN,
        description="Send the same key again to retry without storing twice (as the Idempotency-Key header).",
    )

    @field_validator("text")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        return PostMessage._not_blank(value)


class ReplyBody(Strict):
    text: str
    data: list[JsonValue]
    error: ErrorInfo | None = None
    artifacts: list[ArtifactRef] = Field(
        default_factory=list,
        description="files the reply made (charts, spreadsheets, reports), each served at "
        "GET /api/conversations/{conversation_id}/artifacts/{id}",
    )


class CancelResult(Strict):
    """What ``POST …/cancel`` stopped: the person's turns in that conversation still being worked on."""

    conversation_id: str
    cancelled: int = Field(ge=0, description="turns whose work was cancelled (0 if none was in flight)")


class MessageResult(Strict):
    """The answer to a posted message: Grace's reply and the MADs that took part."""

    conversation_id: str
    message_id: str
    reply: ReplyBody
    participants: list[str]


class MadInfo(Strict):
    name: str
    address: str
    description: str
    alive: bool
    process: str
    tools: list[dict[str, JsonValue]]
    instance: str = Field("", description="new each time the MAD starts or is reloaded")


class Open(BaseModel):
    """A response view of another component's record: the fields the API promises, others kept."""

    model_config = ConfigDict(extra="allow")


class ErrorDetail(Strict):
    code: str
    message: str
    fields: list[FieldError]
    retryable: bool


class ErrorResponse(Strict):
    """The body of every non-2xx response."""

    error: ErrorDetail


class Health(Strict):
    status: Literal["ok", "degraded", "draining"]
    """``degraded`` when a store cannot write (or is damaged, or its MAD does not answer)."""
    mads_alive: list[str]
    storage: list[dict[str, JsonValue]] = Field(
        default_factory=list,
        description="Each store: state (writable, low_space, unwritable, damaged, lost), free_bytes, last_error.",
    )
    bus: dict[str, int]


class MadList(Strict):
    mads: list[MadInfo]


class Participant(Open):
    address: str
    first_seen: str
    last_seen: str
    message_count: int


class Conversation(Open):
    id: str
    title: str | None
    created_at: str
    updated_at: str
    created_by: str | None
    message_count: int
    participants: list[Participant] | None = None


class ConversationPage(Open):
    conversations: list[Conversation]
    next_cursor: str | None


class StoredMessage(Open):
    id: str
    conversation_id: str | None
    sender: str
    recipient: str
    kind: str
    correlation_id: str | None
    created_at: str
    text: str
    envelope: JsonValue


class MessagePage(Open):
    conversation_id: str
    direction: Literal["forward", "backward"]
    messages: list[StoredMessage]
    next_cursor: str | None


class VoiceInfo(Strict):
    """Whether the page may offer voice input: a speech-to-text model is configured in Fiedler."""

    transcription: bool
    max_bytes: int = Field(description="The largest recording POST /api/transcriptions takes.")


class EmptyBody(Strict):
    """Actions that take no fields: an empty body or ``{}``."""


class LoginRequest(Strict):
    """Exactly one of ``token`` (a bearer token) and ``code`` (the single-use code of a first-run link)."""

    token: str | None = Field(default=None, min_length=1, max_length=200, description="A bearer token (mad_…).")
    code: str | None = Field(
        default=None, min_length=1, max_length=200, description="The one-time code from a first-run login link."
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> LoginRequest:
        if (self.token is None) == (self.code is None):
            raise ValueError("send exactly one of token and code")
        return self


class SessionInfo(Strict):
    """Who is signed in; ``csrf_token`` must be sent as X-CSRF-Token on state-changing cookie requests."""

    principal: str
    role: Literal["user", "operator"]
    via: Literal["bearer", "session"]
    csrf_token: str | None
    expires_in: float | None = Field(description="seconds until the session's absolute expiry (sessions only)")


RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")


class AlertsQuery(Strict):
    since: AwareDatetime | None = Field(
        default=None,
        description="Only alerts active since then: an RFC 3339 date-time with its UTC offset (2026-01-31T12:00:00Z).",
    )
    include_acknowledged: bool = False

    @field_validator("since", mode="before")
    @classmethod
    def _rfc3339(cls, value: object) -> object:
        if value is not None and not (isinstance(value, str) and RFC3339.match(value)):
            raise ValueError("must be an RFC 3339 date-time with its UTC offset, such as 2026-01-31T12:00:00Z")
        return value


class AlertPath(Strict):
    alert_id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_\-]{1,64}$")


class Alert(Open):
    id: str
    rule: str
    severity: Literal["info", "warning", "high", "critical"]
    subject: str
    message: str
    first_seen: datetime
    last_seen: datetime
    count: int
    acknowledged: bool


class AlertList(Strict):
    alerts: list[Alert]


def parse_json_bytes(raw: bytes, where: str = "body") -> Any:
    """Decode JSON or raise a 400 that says what is wrong (where the syntax broke, too deep, duplicate key…)."""
    try:
        return decode_json(raw)
    except JsonInputError as exc:
        reason = exc.reason
    raise ApiError(400, "malformed_json", f"{where}: {reason}", [FieldError(field=where, reason=reason)])


async def read_raw(request: web.Request) -> bytes:
    """The request body's bytes, within the size limit (413) and ``body_timeout`` (408)."""
    limit = request.app[MAX_BODY_KEY]
    if request.content_length is not None and request.content_length > limit:
        reason = f"request body is larger than the limit of {limit} bytes"
        raise ApiError(413, "payload_too_large", reason, [FieldError(field="body", reason=reason)])
    timeout = request.app[BODY_TIMEOUT_KEY]
    try:
        async with asyncio.timeout(timeout):
            return await request.read()
    except TimeoutError:
        reason = f"the request body did not arrive within {timeout:g} s"
        raise ApiError(408, "request_timeout", reason, [FieldError(field="body", reason=reason)]) from None


async def read_body(request: web.Request, model: type[M]) -> M:
    """The request body validated against ``model``: 413 / 408 / 415 / 400 / 422 on the way."""
    raw = await read_raw(request)
    if not raw.strip():
        value: Any = {}
    else:
        if request.content_type != "application/json":
            got = request.content_type or "none"
            reason = f"must be application/json, got {got}"
            raise ApiError(
                415,
                "unsupported_media_type",
                f"Content-Type {reason}",
                [FieldError(field="Content-Type", reason=reason)],
            )
        value = parse_json_bytes(raw)
    if not isinstance(value, dict):
        reason = f"must be a JSON object, got {type(value).__name__}"
        raise ApiError(422, "invalid_request", f"body: {reason}", [FieldError(field="body", reason=reason)])
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        raise ApiError.invalid(exc, "body") from None


def read_query(request: web.Request, model: type[M]) -> M:
    """Query parameters validated against ``model`` (repeated parameters are errors)."""
    values: dict[str, str] = {}
    for key in request.query:
        got = request.query.getall(key)
        if len(got) > 1:
            reason = "given more than once"
            raise ApiError(
                422, "invalid_request", f"query.{key}: {reason}", [FieldError(field=f"query.{key}", reason=reason)]
            )
        values[key] = got[0]
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        raise ApiError.invalid(exc, "query") from None


def alert_id(request: web.Request) -> str:
    try:
        return AlertPath(alert_id=request.match_info["alert_id"]).alert_id
    except ValidationError as exc:
        raise ApiError.invalid(exc, "path") from None


def artifact_path(request: web.Request) -> ArtifactPath:
    try:
        return ArtifactPath(
            conversation_id=request.match_info["conversation_id"], artifact_id=request.match_info["artifact_id"]
        )
    except ValidationError as exc:
        raise ApiError.invalid(exc, "path") from None


def idempotency_key(request: web.Request) -> str | None:
    """The ``Idempotency-Key`` header (1-128 of ``A-Z a-z 0-9 _ - . :``), or None; 422 naming it if malformed."""
    value = request.headers.get(IDEMPOTENCY_HEADER)
    if value is None:
        return None
    if re.fullmatch(IDEMPOTENCY_KEY_PATTERN, value) is None:
        reason = "must be 1 to 128 characters among letters, digits, '_', '-', '.' and ':'"
        field = f"header.{IDEMPOTENCY_HEADER}"
        raise ApiError(
            422, "invalid_request", f"validation failed: {field}: {reason}", [FieldError(field=field, reason=reason)]
        )
    return value


def conversation_id(request: web.Request) -> str:
    try:
        return ConversationPath(conversation_id=request.match_info["conversation_id"]).conversation_id
    except ValidationError as exc:
        raise ApiError.invalid(exc, "path") from None
